"""`scrape`: where Python source comes from (an installed package, local folders, the web) and what is
skipped."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline_config.schema.base import PACKAGE, Section, check_regexes


class WebScrapeConfig(Section):
    """A polite crawl: robots.txt (crawl-delay included) is always obeyed and no request leaves
    `allowed_hosts` (redirects are checked hop by hop). Rate, timeout and retries are per request."""

    start_urls: list[str] = []
    # host names ("docs.example.org": any port) or host:port; empty: the start URLs' hosts
    allowed_hosts: list[str] = []
    # regexes: a link is followed when it matches one (empty: every link on an allowed host)
    url_patterns: list[str] = []
    exclude_patterns: list[str] = []
    max_depth: int = Field(2, ge=0)  # links followed from a start URL
    max_pages: int = Field(200, gt=0)
    rate_limit_per_s: float = Field(1.0, gt=0)  # per host; a larger robots.txt crawl-delay wins
    user_agent: str = Field(
        "finetune-pipeline/0.1 (code-LM training-data scraper; add a contact in scrape.web.user_agent)",
        min_length=1,
    )
    max_bytes: int = Field(2_000_000, gt=0)  # per response body, after decompression
    timeout_s: float = Field(10.0, gt=0)  # per request: connecting, and reading the whole body
    retries: int = Field(3, ge=0)  # on 429, 5xx, timeouts and dropped connections
    backoff_s: float = Field(1.0, ge=0)  # base of the jittered exponential backoff
    max_backoff_s: float = Field(60.0, ge=0)  # caps the backoff and a server's Retry-After
    cache_dir: str | None = None  # on-disk HTTP cache; default <workspace>/cache/http
    # the web cannot be hashed in advance: "daily" puts today's UTC date in the stage key (a nightly run
    # re-crawls, revalidating through the HTTP cache); "never" keeps an output until the config changes
    refresh: Literal["daily", "never"] = "daily"

    @field_validator("start_urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        bad = [u for u in value if not re.match(r"https?://[^/\s]+", u)]
        if bad:
            raise ValueError(f"must be http(s) URLs (got {bad})")
        return value

    @field_validator("url_patterns", "exclude_patterns")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        return check_regexes(value)


class ScrapeConfig(Section):
    """Where Python source comes from (`sources`: one or more of package, local, web) and what is skipped.

    Skip rules apply to package and local files: `exclude_dirs` (any folder on the path), `exclude_files`
    (file-name globs), `generated_markers` (regexes searched in a file's first lines), `max_file_bytes`.
    """

    sources: list[Literal["package", "local", "web"]] = ["package"]
    package: str = "sklearn"
    local_dirs: list[str] = []  # folders or git checkouts (the commit is recorded)
    web: WebScrapeConfig = WebScrapeConfig()
    exclude_dirs: list[str] = ["tests", "externals", "_build_utils", "_vendor", "vendor", "third_party"]
    exclude_files: list[str] = ["test_*.py", "*_test.py", "conftest.py"]
    generated_markers: list[str] = [
        r"(?i)\b(auto-?generated|generated (by|from|with)|do not (edit|modify))\b"
    ]
    max_file_bytes: int = Field(1_000_000, gt=0)
    include_private: bool = False
    max_files: int | None = Field(None, gt=0)  # per package or local folder, after the skip rules

    @field_validator("generated_markers")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        return check_regexes(value)

    @model_validator(mode="after")
    def _sources_have_what_they_need(self) -> ScrapeConfig:
        if not self.sources or len(set(self.sources)) != len(self.sources):
            raise ValueError(f"scrape.sources must name each source once (got {self.sources})")
        if "package" in self.sources and not PACKAGE.fullmatch(self.package):
            raise ValueError(
                f"scrape.package must be an importable name such as 'sklearn' (got {self.package!r})"
            )
        if ("local" in self.sources) != bool(self.local_dirs):
            raise ValueError(
                "scrape.local_dirs is set but 'local' is not in scrape.sources"
                if self.local_dirs
                else "scrape.sources has 'local': list the folders in scrape.local_dirs"
            )
        if ("web" in self.sources) != bool(self.web.start_urls):
            raise ValueError(
                "scrape.web.start_urls is set but 'web' is not in scrape.sources"
                if self.web.start_urls
                else "scrape.sources has 'web': list where to start in scrape.web.start_urls"
            )
        return self
