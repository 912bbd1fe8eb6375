"""pipeline_config.redact: the resolved config as MLflow params, the run summary and a registered model's
metadata may show it: every URL credential replaced by ***, nothing else changed."""

from __future__ import annotations

import json

from flows import tracking
from pipeline_config import load_config
from pipeline_config.redact import public_dump, redact_url, redact_value

PASSWORD = "pw-planted-5e1d"


def test_redact_url() -> None:
    assert (
        redact_url(f"https://u:{PASSWORD}@api.example.com:8443/v1") == "https://***@api.example.com:8443/v1"
    )
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_url("https://api.example.com/v1?api_key=abc") == "https://api.example.com/v1?***"
    assert redact_url(f"http://a@b:{PASSWORD}@host/v1") == "http://***@host/v1"  # '@' in the password


def test_public_dump_redacts_the_teacher_url(tiny_profile) -> None:
    url = f"http://bob:{PASSWORD}@127.0.0.1:8000/v1"

    def edit(raw: dict) -> None:
        raw["synthesize"]["teacher"] = {"backend": "openai", "model": "served", "base_url": url}

    cfg = load_config(tiny_profile(edit))
    dumped = public_dump(cfg)
    assert PASSWORD not in json.dumps(dumped)
    assert dumped["synthesize"]["teacher"]["base_url"] == "http://***@127.0.0.1:8000/v1"
    real = cfg.model_dump(mode="json")
    real["synthesize"]["teacher"]["base_url"] = dumped["synthesize"]["teacher"]["base_url"]
    assert dumped == real  # nothing else changed
    assert cfg.synthesize.teacher.base_url == url  # and the config itself keeps what the stage needs


def test_redact_value_reaches_nested_lists() -> None:
    value = {
        "web": {"start_urls": [f"https://a:{PASSWORD}@docs.example.org/x", "https://docs.example.org/y"]}
    }
    assert redact_value(value) == {
        "web": {"start_urls": ["https://***@docs.example.org/x", "https://docs.example.org/y"]}
    }
    assert redact_value({"n": 3, "s": "no url: a@b", "none": None}) == {
        "n": 3,
        "s": "no url: a@b",
        "none": None,
    }


def test_mlflow_params_never_hold_a_url_password() -> None:
    # a caller that forgot public_dump: start_run redacts again
    config = {"synthesize": {"teacher": {"base_url": f"http://bob:{PASSWORD}@127.0.0.1/v1"}}}
    run_id = tracking.start_run(config, run_name="redaction", tags={})
    tracking.end_run(run_id)
    assert tracking.client().get_run(run_id).data.params == {
        "synthesize.teacher.base_url": "http://***@127.0.0.1/v1"
    }
