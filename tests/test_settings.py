"""Settings from the environment: precedence, and errors that name the variable."""

from __future__ import annotations

import pytest

from uploader import Settings, SettingsError

BASE = {"METASTUDIO_PROJECT_ID": "p1", "CLOUD_SDK_AK": "ak", "CLOUD_SDK_SK": "sk"}


def test_region_gives_the_public_endpoint():
    assert Settings.from_env(BASE).endpoint == "https://metastudio.cn-north-4.myhuaweicloud.com"
    env = BASE | {"METASTUDIO_REGION": "cn-east-3"}
    assert Settings.from_env(env).endpoint == "https://metastudio.cn-east-3.myhuaweicloud.com"


def test_endpoint_wins_over_region():
    env = BASE | {"METASTUDIO_REGION": "cn-east-3", "METASTUDIO_ENDPOINT": "https://x.example/"}
    assert Settings.from_env(env).endpoint == "https://x.example"


def test_token_alone_authenticates():
    settings = Settings.from_env({"METASTUDIO_PROJECT_ID": "p1", "METASTUDIO_AUTH_TOKEN": "t"})
    assert settings.uses_token


def test_code_overrides_the_environment():
    assert Settings.from_env(BASE, project_id="p2").project_id == "p2"


@pytest.mark.parametrize(("env", "variable"), [
    ({"CLOUD_SDK_AK": "ak", "CLOUD_SDK_SK": "sk"}, "METASTUDIO_PROJECT_ID"),
    ({"METASTUDIO_PROJECT_ID": "p"}, "CLOUD_SDK_AK"),
    ({"METASTUDIO_PROJECT_ID": "p", "CLOUD_SDK_AK": "ak"}, "CLOUD_SDK_SK"),
    ({"METASTUDIO_PROJECT_ID": "p", "CLOUD_SDK_SK": "sk"}, "CLOUD_SDK_AK"),
    (BASE | {"METASTUDIO_AUTH_TOKEN": "t"}, "METASTUDIO_AUTH_TOKEN"),
    (BASE | {"METASTUDIO_ENDPOINT": "ftp://x"}, "METASTUDIO_ENDPOINT"),
    (BASE | {"METASTUDIO_ENDPOINT": "http://metastudio.example.com"}, "METASTUDIO_ENDPOINT"),
    (BASE | {"METASTUDIO_REGION": "cn north"}, "METASTUDIO_REGION"),
    (BASE | {"METASTUDIO_APP_USER_ID": "用户"}, "METASTUDIO_APP_USER_ID"),
])
def test_bad_settings_name_the_variable(env, variable):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable
    assert variable in str(caught.value)


def test_plain_http_allowed_on_loopback_or_when_asked():
    assert Settings.from_env(BASE | {"METASTUDIO_ENDPOINT": "http://127.0.0.1:8790"})
    assert Settings.from_env(BASE | {"METASTUDIO_ENDPOINT": "http://localhost:1"})
    env = BASE | {"METASTUDIO_ENDPOINT": "http://gw.internal", "METASTUDIO_ALLOW_HTTP": "1"}
    assert Settings.from_env(env).allow_http


def test_secrets_stay_out_of_repr():
    shown = repr(Settings.from_env(BASE | {"CLOUD_SDK_SK": "very-secret"}))
    assert "very-secret" not in shown
