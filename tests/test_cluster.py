"""The arithmetic of the cluster watch (no Ray needed): when a pool's stall timeout runs out, and which nodes can
hold an actor. Its behaviour on a real cluster is in test_ray.py and test_ray_node_loss.py."""

from __future__ import annotations

from llmmarl.cluster import STALL_FACTOR, STALL_FLOOR_S, ProgressWatch, fits


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_automatic_stall_timeout_scales_with_the_longest_wait_so_far() -> None:
    clock = Clock()
    watch = ProgressWatch(None, {"CPU": 1}, unit="game", resume="rerun", clock=clock)
    assert watch.stall_limit == STALL_FLOOR_S  # nothing known yet: the floor (a model may be loading)
    for t in (5.0, 10.0, 100.0, 101.0):  # waits of 5, 5, 90 and 1 s
        clock.now = t
        watch.progressed()
    assert watch.longest == 90.0 and watch.stall_limit == STALL_FACTOR * 90.0
    clock.now = 1000.0
    watch.start()  # the driver's own work between two batches (a learner update) is not a wait
    clock.now = 1001.0
    watch.progressed()
    assert watch.longest == 90.0


def test_an_explicit_stall_timeout_is_used_as_it_is() -> None:
    watch = ProgressWatch(None, {"CPU": 1}, unit="game", resume="rerun", stall_timeout=30.0)
    assert watch.stall_limit == 30.0 and watch.poll == 5.0  # looks at the cluster several times per timeout
    short = ProgressWatch(None, {"CPU": 1}, unit="game", resume="rerun", stall_timeout=2.0, placement_timeout=60)
    assert short.poll == 0.5


def test_a_node_fits_an_actor_by_its_total_resources_and_only_while_alive() -> None:
    gpu_node = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}
    head = {"Alive": True, "Resources": {"CPU": 0.0}}  # a head that takes no actors
    assert fits([head, gpu_node], {"CPU": 1, "GPU": 1})
    assert not fits([head], {"CPU": 1, "GPU": 0})
    assert not fits([head, {**gpu_node, "Alive": False}], {"CPU": 1, "GPU": 1})  # the only node that fits is dead
    assert not fits([head, gpu_node], {"CPU": 1, "GPU": 2})
    assert fits([head], {"CPU": 0, "GPU": 0})  # asks for nothing: any alive node
