"""The one config: parsed from the ConfigMap, refused with field paths, reloaded live."""

from __future__ import annotations

import pytest
from extender_builders import filter_body, node, pod, request, serve

from extender import ConfigError, FairpackConfig, LiveConfig, parse_config
from extender.server import inventory_extender


def test_an_empty_configmap_means_the_defaults() -> None:
    assert parse_config({}) == FairpackConfig()
    assert parse_config(None) == FairpackConfig()


def test_a_configmap_without_the_config_key_is_refused() -> None:
    # A misnamed key must not put the built-in defaults in force without a word.
    with pytest.raises(ConfigError) as error:
        parse_config({"policy.yaml": "policy:\n  weights:\n    best_fit: 1\n"})
    assert str(error.value) == (
        "no config.yaml, config.yml or config.json key (found policy.yaml): put the policy"
        " under config.yaml"
    )


def test_yaml_and_json_both_load() -> None:
    yaml_text = "policy:\n  weights:\n    best_fit: 3\n    fragmentation: 1\n"
    json_text = '{"policy": {"weights": {"best_fit": 3, "fragmentation": 1}}}'
    assert parse_config({"config.yaml": yaml_text}) == parse_config({"config.json": json_text})
    assert parse_config({"config.yaml": yaml_text}).policy.weights == {
        "best_fit": 3.0,
        "fragmentation": 1.0,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "policy:\n  weights:\n    best_fitt: 1\n",
            # the validator's words, without pydantic's "Value error, " before them
            "policy.weights: unknown score term 'best_fitt' (known: best_fit,",
            id="unknown-term",
        ),
        pytest.param(
            "policy:\n  weights:\n    best_fit: -1\n", "must be >= 0", id="negative-weight"
        ),
        pytest.param(
            # accepted, it turned every later filter and prioritize into a 500 (NaN scores)
            "policy:\n  weights:\n    best_fit: .inf\n",
            "policy.weights.best_fit: Input should be a finite number",
            id="infinite-weight",
        ),
        pytest.param(
            # accepted, it made that team's deserved share NaN
            "policy:\n  fairness:\n    team_weights:\n      ml: .inf\n",
            "policy.fairness.team_weights.ml: Input should be a finite number",
            id="infinite-team-weight",
        ),
        pytest.param("pods:\n  default_class: urgent\n", "pods.default_class: ", id="bad-class"),
        pytest.param(
            "nodes:\n  gpu_modle: [x]\n",
            "nodes.gpu_modle: unknown key",
            id="typo",
        ),
        pytest.param(
            "nodes:\n  gpu_model: nvidia.com/gpu.product\n",
            "nodes.gpu_model: expected a list",
            id="label-not-a-list",
        ),
        pytest.param(
            "nodes:\n  spot_values: spot\n", "nodes.spot_values: expected a list", id="set"
        ),
        pytest.param("policy: [1]\n", "policy: expected a mapping", id="section-not-a-mapping"),
        pytest.param(
            "policy:\n  weights: [1]\n",
            "policy.weights: expected a mapping",
            id="dict-not-a-mapping",
        ),
        pytest.param("resources:\n  gpu: ''\n", "resources.gpu: ", id="empty-resource"),
        pytest.param("- a\n- b\n", "expected a mapping", id="not-a-mapping"),
        pytest.param("policy: [\n", "not YAML or JSON", id="not-yaml"),
    ],
)
def test_invalid_configs_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"config.yaml": text})
    assert message in str(error.value)


def test_an_invalid_update_keeps_the_last_good_config() -> None:
    results: list[str] = []
    live = LiveConfig(on_reload=results.append)
    seen: list[FairpackConfig] = []
    live.subscribe(seen.append)
    assert live.update({"config.yaml": "policy:\n  weights:\n    best_fit: 2\n"})
    good = live.current
    assert not live.update({"config.yaml": "policy:\n  weights:\n    nope: 2\n"})
    assert live.current is good
    assert live.update({"config.yaml": "policy:\n  weights:\n    best_fit: 2\n"})
    assert results == ["applied", "invalid", "unchanged"]
    assert seen == [good]


async def test_a_reload_changes_the_next_decision_and_is_counted() -> None:
    extender = inventory_extender(
        [
            node("big", gpus=8, gpu_memory_mib=81920),
            node("small", gpus=8, model="L4", gpu_memory_mib=24576),
        ]
    )
    body = filter_body(pod(req=request(gpus=1)), ["big", "small"])
    async with serve(extender) as client:
        before = await (await client.post("/prioritize", json=body)).json()
        # Memory fit alone: the smaller GPU wins; best fit alone: both are equal.
        extender.config.update({"config.yaml": "policy:\n  weights:\n    best_fit: 1\n"})
        after = await (await client.post("/prioritize", json=body)).json()
        extender.config.update({"config.yaml": "policy:\n  weights:\n    bad: 1\n"})
        metrics = await (await client.get("/metrics")).text()
    assert {h["Host"]: h["Score"] for h in before} == {"big": 0, "small": 10}
    # Equal scores: the stable node order picks one winner, the other gets 9.
    assert sorted(h["Score"] for h in after) == [9, 10]
    assert 'fairpack_config_reloads_total{result="applied"} 1.0' in metrics
    assert 'fairpack_config_reloads_total{result="invalid"} 1.0' in metrics
