import json
import logging
import logging.config

from streamapp.core.redact import REDACTOR
from streamapp.worker.logsetup import logging_config

SECRET = "log-secret-token-9f8e7d6c5b4a"


def configure(capsys, as_json: bool) -> logging.Logger:
    REDACTOR.add(SECRET)
    logging.config.dictConfig(logging_config("info", as_json))
    return logging.getLogger("streamapp.test")


def test_json_logs_are_one_object_per_line_with_secrets_redacted(capsys):
    log = configure(capsys, as_json=True)
    log.info("poll source=%s token=%s", "acme", SECRET)
    try:
        raise ValueError(f"bad {SECRET}")
    except ValueError:
        log.exception("failed")
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    documents = [json.loads(line) for line in lines]
    assert documents[0]["message"] == "poll source=acme token=****"
    assert documents[0]["level"] == "info" and documents[0]["logger"] == "streamapp.test"
    assert SECRET not in "\n".join(lines)
    assert "ValueError" in documents[1].get("exception", "")


def test_plain_logs_redact_secrets_too(capsys):
    log = configure(capsys, as_json=False)
    log.warning("using %s", SECRET)
    out = capsys.readouterr().out
    assert "using ****" in out and SECRET not in out


def test_httpx_request_lines_are_quiet():
    logging.config.dictConfig(logging_config("debug", False))
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING


LIBRARIES = ("faust", "mode", "aiokafka", "kafka")


def test_library_chatter_stays_below_info_at_info():
    logging.config.dictConfig(logging_config("info", False, argv=["pytest"]))
    for name in LIBRARIES:
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    # e.g. aiokafka's "Updating subscribed topics", faust's "[^--Producer]: Starting..."
    assert not logging.getLogger("aiokafka.consumer.subscription_state").isEnabledFor(logging.INFO)
    assert not logging.getLogger("faust.transport.producer").isEnabledFor(logging.INFO)
    # our own lines (one per poll, per state change) stay
    assert logging.getLogger("streamapp.worker.poller").isEnabledFor(logging.INFO)
    assert logging.getLogger("streamapp.worker").isEnabledFor(logging.INFO)


def test_debug_shows_everything_even_after_info():
    logging.config.dictConfig(logging_config("info", False, argv=["pytest"]))
    logging.config.dictConfig(logging_config("debug", False, argv=["pytest"]))
    for name in LIBRARIES:
        assert logging.getLogger(name).getEffectiveLevel() == logging.DEBUG, name


def test_dash_l_debug_on_the_worker_command_line_shows_everything():
    worker = ["faust", "-A", "streamapp.app", "worker"]
    for argv in (
        [*worker, "-l", "debug"],
        [*worker, "-ldebug"],
        [*worker, "--loglevel", "DEBUG"],
        [*worker, "--loglevel=debug"],
    ):
        config = logging_config("info", False, argv=argv)
        assert config["root"]["level"] == "DEBUG", argv
        assert config["loggers"]["faust"]["level"] == "NOTSET", argv
    for argv in ([*worker, "-l", "info"], ["faust", "-A", "streamapp.app", "tail", "-l", "debug"]):
        config = logging_config("info", False, argv=argv)
        assert config["root"]["level"] == "INFO", argv
        assert config["loggers"]["faust"]["level"] == "WARNING", argv
