"""What `meetnet up` runs for --gateways/--processors/--api-workers (no processes started)."""

from __future__ import annotations

from meetnet.supervisor import child_specs


def test_several_instances_get_numbered_names_and_their_own_gateway_client_ids() -> None:
    specs = child_specs(
        simulate=True,
        sensors=10,
        rate=5,
        api_port=8123,
        gateways=3,
        processors=2,
        api_workers=4,
        gateway_client_id="gw-box",
    )
    assert [s.name for s in specs] == [
        "simulator",
        "gateway-1",
        "gateway-2",
        "gateway-3",
        "processor-1",
        "processor-2",
        "api",
    ]
    assert [s.kind for s in specs] == ["simulator", *["gateway"] * 3, *["processor"] * 2, "api"]
    ids = [s.env["MEETNET_GATEWAY_CLIENT_ID"] for s in specs if s.kind == "gateway"]
    assert ids == ["gw-box-1", "gw-box-2", "gw-box-3"]
    assert specs[-1].cmd[-4:] == ["--port", "8123", "--workers", "4"]


def test_one_of_each_keeps_the_plain_names_and_the_configured_client_id() -> None:
    specs = child_specs(simulate=False, sensors=1, rate=1, api_port=8000, gateway_client_id="gw")
    assert [s.name for s in specs] == ["gateway", "processor", "api"]
    assert specs[0].env == {}  # the gateway reads MEETNET_GATEWAY_CLIENT_ID as configured


def test_without_a_configured_id_several_gateways_derive_theirs_from_the_host() -> None:
    specs = child_specs(simulate=False, sensors=1, rate=1, api_port=8000, gateways=2)
    ids = [s.env["MEETNET_GATEWAY_CLIENT_ID"] for s in specs if s.kind == "gateway"]
    assert ids[0].startswith("meetnet-gw-") and ids[0].endswith("-1")
    assert ids[1] == ids[0][:-1] + "2"
