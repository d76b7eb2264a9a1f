"""The shipped Prometheus rules and scrape config, checked by Prometheus's own promtool.

`observability/alerts_test.yml` feeds each alert series that must fire it and series that
must not; promtool fails on any difference. Without promtool this test fails (it is part
of `make test`; `.ci/run` installs Debian's `prometheus` package, which ships it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from common.settings import Settings
from common.telemetry import metrics_urls

OBSERVABILITY = Path(__file__).resolve().parents[2] / "observability"
INSTALL = "install Debian's prometheus package: sudo apt-get install prometheus"
# The shipped config is for the default ports, whatever this machine's environment says.
DEFAULTS = Settings(
    metrics_host=Settings.model_fields["metrics_host"].default,
    metrics_port_base=Settings.model_fields["metrics_port_base"].default,
)


def promtool() -> str:
    found = shutil.which("promtool") or shutil.which("/usr/bin/promtool")
    assert found is not None, (
        f"promtool is not installed, so the alert rules are untested; {INSTALL}"
    )
    return found


def run(*args: str, cwd: Path) -> str:
    done = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_the_alert_rules_fire_on_the_series_they_should_and_only_those() -> None:
    assert "SUCCESS" in run("test", "rules", "alerts_test.yml", cwd=OBSERVABILITY)


def test_every_alert_rule_has_a_unit_test() -> None:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    tests = yaml.safe_load((OBSERVABILITY / "alerts_test.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tested = {
        case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])
    }
    assert alerts == tested
    assert {
        "SagaworksDeadLetters",
        "SagaworksCircuitOpen",
        "SagaworksSagaFailureRatioHigh",
        "SagaworksWorkerNotReporting",
        "SagaworksCoordinationLag",
    } <= alerts


def test_the_scrape_config_is_valid_and_scrapes_every_worker_port(tmp_path: Path) -> None:
    # promtool checks that the credentials file exists, at the path relative to the config.
    config_dir = tmp_path / "observability"
    config_dir.mkdir()
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(OBSERVABILITY / name, config_dir / name)
    key = tmp_path / "data" / "prometheus" / "operator.key"
    key.parent.mkdir(parents=True)
    key.write_text("not-a-real-key")
    assert "SUCCESS" in run("check", "config", "prometheus.yml", cwd=config_dir)

    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["sagaworks-api"]
    assert api["authorization"]["credentials_file"] == "../data/prometheus/operator.key"
    targets = {
        target: group["labels"]["role"]
        for group in jobs["sagaworks-workers"]["static_configs"]
        for target in group["targets"]
    }
    defaults = {
        role: url.removeprefix("http://").removesuffix("/metrics")
        for role, url in metrics_urls(DEFAULTS).items()
    }
    assert targets == {address: role for role, address in defaults.items()}
