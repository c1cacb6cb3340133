"""The balancer's allocation as a pure function: targets, clamps, shortage, priority, capacity."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmmem.hyperv import Claim, allocate, claim_for, target_pages

MB = 256  # pages of 4 KiB in a MB: every size below is in 4 KiB pages
UNIT = 2 * MB  # the 2 MB block


def running(
    name: str,
    demand_mb: float,
    *,
    buffer: int = 20,
    priority: int = 50,
    minimum_mb: int = 32,
    maximum_mb: int = 2048,
    assigned_mb: float | None = None,
) -> Claim:
    demand = int(demand_mb * MB)
    return claim_for(
        name,
        demand=demand,
        minimum=minimum_mb * MB,
        maximum=maximum_mb * MB,
        buffer=buffer,
        priority=priority,
        assigned=int((assigned_mb if assigned_mb is not None else demand_mb) * MB),
    )


def restarting(
    name: str, startup_mb: int = 512, *, priority: int = 50, buffer: int = 20, minimum_mb: int = 32
) -> Claim:
    return claim_for(
        name,
        demand=startup_mb * MB,
        minimum=minimum_mb * MB,
        maximum=2048 * MB,
        buffer=buffer,
        priority=priority,
        assigned=0,
        smart_paging=True,
    )


def in_mb(allocation: dict[str, int]) -> dict[str, float]:
    return {name: pages / MB for name, pages in allocation.items()}


def test_target_is_demand_plus_buffer_clamped_to_minimum_and_maximum() -> None:
    assert target_pages(250 * MB, 20, 32 * MB, 2048 * MB) == 300 * MB
    assert target_pages(10 * MB, 20, 32 * MB, 2048 * MB) == 32 * MB  # minimum
    assert target_pages(2000 * MB, 20, 32 * MB, 2048 * MB) == 2048 * MB  # maximum
    assert target_pages(100 * MB, 2000, 32 * MB, 4096 * MB) == 2100 * MB


def test_roomy_host_gives_every_vm_its_target_in_2mb_blocks() -> None:
    # The article after boot: 512 MB + 20 % = 614.4 MB, rounded up to the 2 MB block.
    alloc = in_mb(allocate(1400 * MB, [running("vm1", 512)], UNIT))
    assert alloc == {"vm1": 616}
    idle = in_mb(allocate(1400 * MB, [running(f"vm{i}", 250) for i in range(4)], UNIT))
    assert idle == {f"vm{i}": 300 for i in range(4)}  # 4 x 300 = 1200 of 1400: fine


def test_article_storm_divides_1400mb_equally_and_leaves_648mb_to_smart_paging() -> None:
    claims = [restarting(f"vm{i}") for i in range(4)]
    alloc = in_mb(allocate(1400 * MB, claims, UNIT))
    assert alloc == {f"vm{i}": 350 for i in range(4)}
    assert sum(512 - a for a in alloc.values()) == 648


def test_shortage_drops_buffers_before_anyone_goes_short() -> None:
    # Three idle VMs want 300 MB each (250 demand); a fourth restarts and needs 512.
    claims = [running(f"idle{i}", 250, assigned_mb=300) for i in range(3)]
    claims.append(restarting("boot"))
    alloc = in_mb(allocate(1400 * MB, claims, UNIT))
    assert alloc["boot"] >= 512  # got its Startup RAM: no Smart Paging
    assert all(alloc[f"idle{i}"] >= 250 for i in range(3))  # never below demand
    assert sum(alloc.values()) <= 1400


def test_running_vm_is_never_taken_below_its_demand() -> None:
    claims = [running("busy", 600, assigned_mb=600), restarting("boot", 1024)]
    alloc = in_mb(allocate(1000 * MB, claims, UNIT))
    assert alloc["busy"] == 600
    assert alloc["boot"] == 400  # the rest, short of Startup RAM: Smart Paging


def test_priority_higher_first_and_taken_from_lower_first() -> None:
    claims = [restarting("high", 128, priority=80), restarting("low", 128, priority=20)]
    alloc = in_mb(allocate(200 * MB, claims, UNIT))
    assert alloc == {"high": 128, "low": 72}
    # Buffers too: with room for both needs, the higher priority gets its buffer first.
    claims = [running("high", 100, priority=90), running("low", 100, priority=10)]
    alloc = in_mb(allocate(220 * MB, claims, UNIT))
    assert alloc == {"high": 120, "low": 100}


def test_restarting_vms_get_their_minimum_before_any_need() -> None:
    claims = [restarting("high", 128, priority=100), restarting("low", 128, priority=0)]
    alloc = in_mb(allocate(100 * MB, claims, UNIT))
    assert alloc == {"high": 68, "low": 32}


def test_static_vm_always_has_startup() -> None:
    static = claim_for(
        "static",
        demand=0,
        minimum=0,
        maximum=0,
        buffer=0,
        priority=0,
        assigned=0,
        dynamic=False,
        startup=256 * MB,
    )
    alloc = in_mb(allocate(300 * MB, [static, restarting("dyn", 128, priority=100)], UNIT))
    assert alloc == {"static": 256, "dyn": 44}


def test_equal_priorities_share_equally_with_whole_blocks() -> None:
    claims = [restarting(f"vm{i}", 128) for i in range(4)]
    alloc = in_mb(allocate(350 * MB, claims, UNIT))
    assert sorted(alloc.values()) == [86, 88, 88, 88]  # 175 blocks of 2 MB among four
    assert sum(alloc.values()) == 350


claim_strategy = st.builds(
    lambda name, demand, extra_min, buffer, priority, soft, held: claim_for(
        name,
        demand=demand * UNIT,
        minimum=(16 + extra_min) * UNIT,
        maximum=(16 + extra_min + demand + 64) * UNIT,
        buffer=buffer,
        priority=priority,
        assigned=held * UNIT,
        smart_paging=soft,
    ),
    st.just(""),
    st.integers(0, 200),
    st.integers(0, 50),
    st.integers(5, 2000),
    st.integers(0, 100),
    st.booleans(),
    st.integers(0, 300),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(claim_strategy, min_size=1, max_size=6), st.integers(0, 3000))
def test_allocation_invariants(raw: list[Claim], capacity_units: int) -> None:
    claims = [
        Claim(f"vm{i}", c.priority, c.floor, c.minimum, c.need, c.want) for i, c in enumerate(raw)
    ]
    capacity = capacity_units * UNIT
    alloc = allocate(capacity, claims, UNIT)
    floors = sum(c.floor for c in claims)
    for c in claims:
        got = alloc[c.name]
        assert got % UNIT == 0
        assert got >= c.floor  # nobody below what it must keep
        assert got <= max(c.floor, c.want) + UNIT  # nobody above its target (block rounding)
    if floors <= capacity:
        assert sum(alloc.values()) <= capacity  # the capacity (and so the reserve) holds
    if sum(-(-c.want // UNIT) * UNIT for c in claims) <= capacity:
        assert all(alloc[c.name] >= c.want for c in claims)  # roomy: everyone gets the target
    # Priority: a VM short of its need means every lower-priority VM is at its minimum level.
    for c in claims:
        if alloc[c.name] < c.need:
            for other in claims:
                if other.priority < c.priority:
                    level = max(other.floor, other.minimum)
                    assert alloc[other.name] <= -(-level // UNIT) * UNIT
