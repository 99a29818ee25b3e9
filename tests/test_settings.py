"""Settings: every value checked at start with a one-line error naming its flag or variable and the
range; a flag beats a bad variable; a busy port is named before gradio starts; hosted defaults."""

from __future__ import annotations

import json
import socket
import urllib.request
from dataclasses import fields

import pytest

from controlnet_core.settings import (
    ENV_VARS,
    HARD_MAX_IMAGE_PIXELS,
    HOSTED_DEFAULTS,
    LIMITS,
    SettingError,
    Settings,
    check_address,
    check_can_start,
    settings_from_cli,
    settings_from_env,
)
from tests.conftest import free_port

# (field, bad value, words of the allowed range the message must contain)
BAD_VALUES = [
    ("port", "0", "from 1 to 65535"),
    ("port", "99999", "from 1 to 65535"),
    ("port", "-5", "from 1 to 65535"),
    ("queue_size", "0", "at least 1"),
    ("max_images", "0", "from 1 to 8"),
    ("max_images", "9", "from 1 to 8"),
    ("max_steps", "0", "from 1 to 100"),
    ("max_steps", "101", "from 1 to 100"),
    ("max_resolution", "0", "multiple of 64 from 64 to 1024"),
    ("max_resolution", "100", "multiple of 64 from 64 to 1024"),
    ("max_resolution", "2048", "multiple of 64 from 64 to 1024"),
    ("max_cached_controlnets", "0", "at least 1"),
    ("max_upload_mb", "0", "from 1 to 500"),
    ("max_upload_mb", "501", "from 1 to 500"),
    ("max_image_pixels", "4095", f"from 4096 to {HARD_MAX_IMAGE_PIXELS}"),
    ("max_image_pixels", str(HARD_MAX_IMAGE_PIXELS + 1), "from 4096 to"),
    ("cache_max_age", "59", "at least 60"),
    ("cache_sweep_interval", "9", "at least 10"),
    ("preview_concurrency", "0", "from 1 to 16"),
    ("preview_concurrency", "17", "from 1 to 16"),
]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_VALUES)
def test_a_bad_flag_names_the_flag_and_the_range(name, value, allowed):
    with pytest.raises(SettingError) as caught:
        settings_from_cli([flag(name), value], {})
    message = str(caught.value)
    assert message.startswith(f"{flag(name)}: {name} must be ") and allowed in message
    assert f"got {value}" in message and "\n" not in message
    assert caught.value.field == name


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_VALUES)
def test_a_bad_variable_names_the_variable_the_range_and_the_overriding_flag(name, value, allowed):
    with pytest.raises(ValueError) as caught:
        settings_from_env({ENV_VARS[name]: value})
    message = str(caught.value)
    assert message.startswith(f"{ENV_VARS[name]}: {name} must be ") and allowed in message
    assert f"a {flag(name)} flag overrides it" in message and "\n" not in message


def test_text_where_a_number_or_yes_no_belongs_names_the_variable():
    with pytest.raises(ValueError, match=r"^CONTROLNET_PORT: port must be an integer from 1 to"):
        settings_from_env({"CONTROLNET_PORT": "eighty"})
    with pytest.raises(ValueError, match=r"^CONTROLNET_HOSTED: hosted must be true or false"):
        settings_from_env({"CONTROLNET_HOSTED": "maybe"})
    with pytest.raises(ValueError, match=r"^backend must be one of"):  # no source: the field
        Settings().with_overrides(backend="gpu")
    with pytest.raises(ValueError, match=r"^max_steps must be an integer"):
        Settings(max_steps=2.5)


def test_limits_are_not_clamped_and_the_smallest_values_are_accepted():
    smallest = settings_from_cli(["--max-images", "1", "--max-steps", "1"], {})
    assert (smallest.max_images, smallest.max_steps) == (1, 1)
    assert settings_from_env({"CONTROLNET_MAX_IMAGES": "1"}).max_images == 1
    assert (
        settings_from_cli(["--max-resolution", "64", "--queue-size", "1"], {}).max_resolution == 64
    )
    top = Settings(max_resolution=1024, max_images=8, max_steps=100, port=65535)
    assert (top.max_resolution, top.max_images, top.max_steps) == (1024, 8, 100)
    for name, limit in LIMITS.items():  # every default is inside its own range
        limit.check(name, getattr(Settings(), name))
        if name in HOSTED_DEFAULTS:
            limit.check(name, HOSTED_DEFAULTS[name])


def test_every_setting_has_a_variable_and_a_flag():
    assert set(ENV_VARS) == {field.name for field in fields(Settings)}
    values = {
        "max_upload_mb": "7",
        "max_image_pixels": "1000000",
        "cache_max_age": "120",
        "cache_sweep_interval": "30",
        "preview_concurrency": "3",
    }
    from_env = settings_from_env({ENV_VARS[name]: value for name, value in values.items()})
    argv = [part for name, value in values.items() for part in (flag(name), value)]
    from_cli = settings_from_cli(argv, {})
    for name, value in values.items():
        assert getattr(from_env, name) == getattr(from_cli, name) == int(value)
    assert from_cli.max_upload_bytes == 7 * 1024 * 1024
    assert settings_from_cli(["--mcp"], {}).mcp is True
    assert settings_from_env({"CONTROLNET_MCP": "yes"}).mcp is True
    assert settings_from_env({"GRADIO_MCP_SERVER": "True"}).mcp is True  # gradio's own variable
    assert settings_from_cli(["--no-mcp"], {"CONTROLNET_MCP": "on"}).mcp is False


def test_a_flag_wins_over_a_bad_variable_of_the_same_setting():
    env = {
        "CONTROLNET_MAX_IMAGES": "0",
        "CONTROLNET_PORT": "eighty",
        "CONTROLNET_BACKEND": "gpu",
        "CONTROLNET_SHARE": "maybe",
    }
    argv = ["--max-images", "2", "--port", "9100", "--backend", "tiny", "--no-share"]
    settings = settings_from_cli(argv, env)
    assert (settings.max_images, settings.port, settings.backend, settings.share) == (
        2,
        9100,
        "tiny",
        False,
    )
    # A bad variable whose setting no flag overrides still stops the app, named.
    with pytest.raises(ValueError, match="^CONTROLNET_MAX_STEPS: max_steps must be an integer"):
        settings_from_cli(argv, {**env, "CONTROLNET_MAX_STEPS": "0"})


def test_hosted_defaults_apply_on_spaces_to_what_the_operator_did_not_set():
    settings = settings_from_env({"SPACE_ID": "someone/controlnet"})
    assert settings.hosted is True
    for name, value in HOSTED_DEFAULTS.items():
        assert getattr(settings, name) == value, name
    explicit = settings_from_cli(
        ["--max-steps", "40", "--host", "127.0.0.1"],
        {
            "SPACE_ID": "someone/controlnet",
            "CONTROLNET_MAX_IMAGES": "3",
            "GRADIO_SERVER_PORT": "7861",
        },
    )
    assert (explicit.max_steps, explicit.host, explicit.max_images, explicit.port) == (
        40,
        "127.0.0.1",
        3,
        7861,
    )
    assert explicit.queue_size == HOSTED_DEFAULTS["queue_size"]
    # Off Spaces the plain defaults, unless asked; on Spaces hosted can be switched off.
    assert settings_from_env({}) == Settings()
    assert settings_from_cli(["--hosted"], {}).max_images == HOSTED_DEFAULTS["max_images"]
    assert (
        settings_from_env({"CONTROLNET_HOSTED": "true"}).queue_size == HOSTED_DEFAULTS["queue_size"]
    )
    off = settings_from_env({"SPACE_ID": "someone/controlnet", "CONTROLNET_HOSTED": "false"})
    assert off == Settings()
    assert settings_from_cli(["--no-hosted"], {"SPACE_ID": "x/y"}) == Settings()


def test_a_busy_port_names_the_port_flag_and_variable():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SettingError, match=f"^--port/CONTROLNET_PORT: port {port} is in use"):
            check_address("127.0.0.1", port)
        with pytest.raises(SettingError, match="^--port/CONTROLNET_PORT"):
            check_address("0.0.0.0", port)  # every address includes the busy one
    check_address("127.0.0.1", port)  # free again


def test_an_address_of_another_machine_names_the_host_flag():
    # 203.0.113.0/24 is TEST-NET-3: never an address of this machine.
    with pytest.raises(SettingError, match="^--host/CONTROLNET_HOST: host 203.0.113.9 is not"):
        check_address("203.0.113.9", free_port())


def test_mcp_without_its_extra_is_a_one_line_error(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mcp" else real_find_spec(name, *a),
    )
    with pytest.raises(
        SettingError, match=r'^--mcp/CONTROLNET_MCP: mcp needs .*pip install "gradio\[mcp\]"'
    ):
        check_can_start(Settings(mcp=True, port=free_port()))
    check_can_start(Settings(mcp=False, port=free_port()))


class LaunchRecorder:
    """Records what main passes to the page's queue() and launch(), launching nothing."""

    def __init__(self):
        self.queue_size = None
        self.launched = None
        self.blocked = False


@pytest.fixture
def recorded(monkeypatch):
    import gradio as gr

    import app

    recorder = LaunchRecorder()
    queue = gr.Blocks.queue

    def record_queue(self, max_size=None, **options):
        recorder.queue_size = max_size
        return queue(self, max_size=max_size, **options)

    def record_launch(self, **options):
        recorder.launched = options

    def record_block(self):
        recorder.blocked = True

    monkeypatch.setattr(app, "build_app", lambda engine: None)
    monkeypatch.setattr(gr.Blocks, "queue", record_queue)
    monkeypatch.setattr(gr.Blocks, "launch", record_launch)
    monkeypatch.setattr(gr.Blocks, "block_thread", record_block)
    for name in (*ENV_VARS.values(), "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    return recorder


def test_main_passes_the_upload_cap_and_mcp_to_gradio(recorded):
    from app import main

    port = free_port()
    main(["--backend", "tiny", "--port", str(port), "--max-upload-mb", "5", "--queue-size", "3"])
    assert recorded.queue_size == 3
    options = recorded.launched
    assert options["server_port"] == port and options["server_name"] == "127.0.0.1"
    assert options["max_file_size"] == 5 * 1024 * 1024
    # Our errors are escaped gr.Errors, always shown; gradio's other errors name server paths.
    assert options["mcp_server"] is False and options["show_error"] is False
    assert options["prevent_thread_lock"] and recorded.blocked  # the warm-up starts in between


@pytest.mark.parametrize(
    ("argv", "env", "start"),
    [
        (
            ["--max-steps", "0"],
            {},
            "app.py: error: --max-steps: max_steps must be an integer from 1",
        ),
        (["--port", "99999"], {}, "app.py: error: --port: port must be an integer from 1 to 65535"),
        ([], {"CONTROLNET_MAX_IMAGES": "0"}, "app.py: error: CONTROLNET_MAX_IMAGES: max_images"),
        ([], {"CONTROLNET_QUEUE_SIZE": "0"}, "app.py: error: CONTROLNET_QUEUE_SIZE: queue_size"),
    ],
)
def test_main_stops_on_a_bad_setting_with_one_line(recorded, monkeypatch, argv, env, start):
    from app import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as caught:
        main(["--backend", "tiny", *argv])
    message = str(caught.value.code)
    assert message.startswith(start) and "\n" not in message
    assert recorded.launched is None


def test_main_names_the_port_when_it_is_busy(recorded):
    from app import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as caught:
            main(["--backend", "tiny", "--port", str(port)])
    message = str(caught.value.code)
    assert message == (
        f"app.py: error: --port/CONTROLNET_PORT: port {port} is in use on 127.0.0.1: "
        "stop the other server or choose another port"
    )
    assert recorded.launched is None


def test_main_lets_a_flag_beat_a_bad_variable(recorded, monkeypatch):
    from app import main

    monkeypatch.setenv("CONTROLNET_PORT", "99999")
    port = free_port()
    main(["--backend", "tiny", "--port", str(port)])
    assert recorded.launched["server_port"] == port


def test_an_unreadable_flag_is_one_line_too(capsys):
    with pytest.raises(SystemExit) as caught:
        settings_from_cli(["--port", "abc"], {})
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "argument --port: invalid int value: 'abc'" in error and error.count("\n") == 1


def test_mcp_server_lists_the_tools_of_a_launched_app():
    pytest.importorskip("mcp", reason='needs pip install "gradio[mcp]"')
    from app import build_app
    from controlnet_core import Engine
    from demos.launch import launch_options

    demo = build_app(Engine(Settings(backend="tiny")), ["canny"], combine=False)
    options = launch_options(Settings(mcp=True, port=free_port()))
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **options)
    try:
        url = f"http://127.0.0.1:{options['server_port']}/gradio_api/mcp/schema"
        with urllib.request.urlopen(url, timeout=30) as response:
            tools = {tool["name"]: tool for tool in json.load(response)}
    finally:
        demo.close()
    # The generation endpoints are tools named after them, described for an agent.
    assert {"canny", "canny_compare", "canny_sweep", "canny_map"} <= set(tools)
    assert "Canny ControlNet" in tools["canny"]["description"]
    assert {"image", "prompt", "conditioning_scale"} <= set(
        tools["canny"]["inputSchema"]["properties"]
    )
