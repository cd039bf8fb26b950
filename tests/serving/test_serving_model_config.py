"""TF Serving's ModelServerConfig text -> data, its checks, version policies and version directory names (pure)."""

from __future__ import annotations

import pytest

from serving.model_config import (
    ModelConfig,
    ModelConfigError,
    ServerConfig,
    VersionPolicy,
    from_proto,
    parse_config_text,
    single_model,
    to_proto,
    validate,
)
from serving.registry import parse_version
from serving.status import Code

FULL = """
# TF Serving's g3doc/serving_config.md example, two models
model_config_list {
  config {
    name: 'half'
    base_path: '/models/half'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 42 versions: 43 } }
    version_labels { key: 'stable' value: 42 }
    version_labels { key: 'canary' value: 43 }
  }
  config {
    name: "resnet"
    base_path: "/models/resnet"
    model_platform: "tensorflow"
  }
}
"""


def model(name: str, policy: str = "", extra: str = "", platform: str = 'model_platform: "tensorflow"') -> str:
    body = f"model_version_policy {{ {policy} }}" if policy else ""
    return f'config {{ name: "{name}" base_path: "/m/{name}" {platform} {body} {extra} }}'


def listing(*models: str) -> str:
    return "model_config_list { " + " ".join(models) + " }"


def test_the_documented_example_parses() -> None:
    config = parse_config_text(FULL, "models.config")
    assert config == ServerConfig(
        (
            ModelConfig(
                name="half",
                base_path="/models/half",
                policy=VersionPolicy("specific", versions=(42, 43)),
                labels=(("canary", 43), ("stable", 42)),
            ),
            ModelConfig(name="resnet", base_path="/models/resnet"),
        )
    )
    assert config.models is not None and dict(config.models[0].labels) == {"stable": 42, "canary": 43}
    validate(config)
    assert from_proto(to_proto(config)) == config


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        (listing(model("m")), VersionPolicy()),
        (listing(model("m", "latest {}")), VersionPolicy("latest", 1)),
        (listing(model("m", "latest { num_versions: 3 }")), VersionPolicy("latest", 3)),
        (listing(model("m", "all {}")), VersionPolicy("all")),
        (listing(model("m", "specific { versions: 7 versions: 2 }")), VersionPolicy("specific", versions=(7, 2))),
        (listing(model("m", "specific {}")), VersionPolicy("specific")),
        (listing(model("m", platform="model_type: TENSORFLOW")), VersionPolicy()),  # the deprecated field
    ],
)
def test_version_policies_parse(text: str, policy: VersionPolicy) -> None:
    config = parse_config_text(text)
    assert config.models is not None
    (only,) = config.models
    assert (only.policy, only.platform) == (policy, "tensorflow")
    assert from_proto(to_proto(config)) == config


def test_no_list_and_an_empty_list_differ() -> None:
    assert parse_config_text("") == ServerConfig(None)  # TF Serving: "Taking no action for empty config."
    assert parse_config_text("model_config_list {}") == ServerConfig(())  # serves nothing
    assert single_model("m", "/models/m") == ServerConfig((ModelConfig("m", "/models/m"),))


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            'model_config_list {\n  config {\n    nme: "x"\n  }\n}',
            [
                "Error parsing text-format tensorflow.serving.ModelServerConfig: models.config:3:5: ",
                'has no field named "nme". Did you mean "name"?',
                "protobuf text format",
            ],
        ),
        ('model_config_list {\n  config { name: "x" \n', ["models.config:2:", 'Expected "}"']),
        ("model_config_list { config { name: 3 } }", ["models.config:1:", "Expected string"]),
        (
            listing(model("m", "latest { num_versions: -1 }")),
            ["models.config:1:", "Value out of range: -1"],
        ),
        ("model_config { }", ['has no field named "model_config". Did you mean "model_config_list"?']),
        ("models {}", ["Its fields are: custom_model_config, model_config_list."]),
    ],
)
def test_syntax_errors_name_the_file_line_and_fix(text: str, fragments: list[str]) -> None:
    with pytest.raises(ModelConfigError) as caught:
        parse_config_text(text, "models.config")
    assert caught.value.exit_code == 2
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)


# TF Serving's texts (model_servers/server_core.cc: GetPlatform, ValidateModelConfigList,
# CreateStoragePathRoutes); the rest are this server's own limits.
REFUSED = [
    (listing(model("m", platform="")), "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
     "ModelServerConfig::model_platform, model name is m"),
    (listing(model("m", platform='model_type: TENSORFLOW model_platform: "tensorflow"')),
     "Illegal setting both ModelServerConfig::model_type (deprecated) and ModelServerConfig::model_platform, "
     "model name is m"),
    (listing(model("m", platform="model_type: OTHER")), "ModelServerConfig::model_type choice 2 not supported."),
    (listing(model("m"), model("m")), "Illegal to list model m multiple times in config list"),
    (listing('config { name: "m" base_path: "models/m" model_platform: "tensorflow" }'),
     "Expected model m to have an absolute path or URI; got base_path()=models/m"),
    (listing('config { name: "m" model_platform: "tensorflow" }'),
     "Expected model m to have an absolute path or URI; got base_path()="),
    (listing(model("m", platform='model_platform: "pytorch"')), "Model m requests unsupported platform pytorch"),
    (listing('config { name: "m" base_path: "gs://bucket/m" model_platform: "tensorflow" }'),
     "canary's model server reads local directories only"),
    (listing('config { base_path: "/m" model_platform: "tensorflow" }'), "model_config_list.config[0] has no name"),
    ('custom_model_config { type_url: "x" }', "custom_model_config is not supported"),
]


@pytest.mark.parametrize(("text", "message"), REFUSED)
def test_configs_tf_serving_refuses(text: str, message: str) -> None:
    with pytest.raises(ModelConfigError) as caught:
        validate(parse_config_text(text))
    assert message in caught.value.message
    assert caught.value.code is Code.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("policy", "found", "served"),
    [
        (VersionPolicy(), [], []),
        (VersionPolicy(), [3, 1, 2], [3]),
        (VersionPolicy("latest", 2), [3, 1, 2], [2, 3]),
        (VersionPolicy("latest", 5), [3, 1], [1, 3]),
        (VersionPolicy("latest", 0), [3, 1], [3]),  # TF Serving: max(num_versions, 1)
        (VersionPolicy("all"), [3, 1, 2], [1, 2, 3]),
        (VersionPolicy("specific", versions=(1, 3, 9)), [1, 2, 3], [1, 3]),
        (VersionPolicy("specific"), [1, 2], []),
    ],
)
def test_version_policy_selects(policy: VersionPolicy, found: list[int], served: list[int]) -> None:
    assert policy.select(found) == served


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("1", 1),
        ("00000123", 123),  # TF Serving's own test data
        ("0", 0),
        ("+5", 5),
        ("-3", -3),
        (" 7\t", 7),  # absl::SimpleAtoi trims ASCII whitespace
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", None),  # beyond int64
        ("", None),
        ("+", None),
        ("1a", None),
        ("1.0", None),
        ("0x10", None),
        ("1 2", None),
        ("²", None),  # a digit to str.isdigit, not to SimpleAtoi
        ("٣", None),
        (".1.tmp", None),
    ],
)
def test_version_directory_names_parse_as_simple_atoi(name: str, version: int | None) -> None:
    assert parse_version(name) == version
