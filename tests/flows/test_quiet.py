"""Library chatter goes to the run's log file, not the terminal (flows/quiet.py)."""

from __future__ import annotations

import logging

from flows.quiet import library_output_to


def test_a_library_warning_goes_to_the_log_file(tmp_path, caplog):
    log = tmp_path / "logs" / "run.log"
    with caplog.at_level(logging.WARNING), library_output_to(log):
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward")
    assert "Failed to load CPU gemm_4bit_forward" in log.read_text()
    assert "gemm_4bit" not in caplog.text  # never reached the root logger's handlers (Prefect's console)
    assert logging.getLogger("bitsandbytes").propagate  # restored for an in-process caller
