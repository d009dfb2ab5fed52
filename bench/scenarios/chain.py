"""A chain of light steps (`core.transform@1`, each adding one to the step before), beside
the same chain as plain Temporal activities and as plain local activities (the floor a fast
path can reach) on the same server, and as plain activities on a stock Temporal dev server
(without our low-latency setting: Temporal as it comes). All are timed the same way: the
client's submit to its result, runs interleaved. Also the CPU time each process of the stack
spends per step of the Reflux runs, beside the bench process's (worker and client) for the
plain local-activity chain: where a step's time goes."""

from __future__ import annotations

import time

from bench import baseline
from bench.figures import Figure, ms, p50, p95
from bench.runner import Bench
from orchestrator import parse_spec

NAME = "chain"
PROCESSES = ("worker", "nodes-core", "temporal", "nats")
"""Processes whose CPU time the Reflux runs are charged (the profile in one line each). The
trace sink works after a run ends (its events linger), so it is not among them."""


def chain_flow(steps: int) -> str:
    lines = [
        f"id: chain{steps}",
        "steps:",
        "  - {id: s0, node: core.transform@1, with: {value: 1}}",
    ]
    lines += [
        f"  - {{id: s{i}, node: core.transform@1,"
        f" with: {{value: '{{{{ steps.s{i - 1}.output.value + 1 }}}}'}}}}"
        for i in range(1, steps)
    ]
    return "\n".join(lines) + "\n"


async def run(bench: Bench) -> list[Figure]:
    steps, rounds = (10, 2) if bench.quick else (40, 7)
    spec = parse_spec(chain_flow(steps))
    ours, plain, local, stock, cpu_local = [], [], [], [], []
    cpu_ours: dict[str, list[float]] = {name: [] for name in PROCESSES}
    stock_client = await bench.stock()
    async with (
        baseline.plain_worker(bench.client) as queue,
        baseline.plain_worker(stock_client) as stock_queue,
    ):
        for i in range(rounds + 1):  # the first round warms up, and is not counted
            started = time.perf_counter()
            await baseline.execute(stock_client, stock_queue, baseline.Chain.run, steps, False)
            took_stock = time.perf_counter() - started
            started = time.perf_counter()
            await baseline.execute(bench.client, queue, baseline.Chain.run, steps, False)
            took_plain = time.perf_counter() - started
            started, cpu = time.perf_counter(), time.process_time()
            await baseline.execute(bench.client, queue, baseline.Chain.run, steps, True)
            took_local = time.perf_counter() - started
            cpu_plain_local = time.process_time() - cpu
            before = {name: bench.stack.cpu_seconds(name) for name in PROCESSES}
            started, cpu = time.perf_counter(), time.process_time()
            result = await bench.run(spec)
            took_ours = time.perf_counter() - started
            spent = {name: bench.stack.cpu_seconds(name) - before[name] for name in PROCESSES}
            spent["worker"] += time.process_time() - cpu  # and the client, as the baseline's
            assert result.steps[f"s{steps - 1}"].output == {"value": steps}
            if i:
                cpu_local.append(ms(cpu_plain_local) / steps)
                for name, seconds in spent.items():
                    cpu_ours[name].append(ms(seconds) / steps)
                ours.append(ms(took_ours) / steps)
                plain.append(ms(took_plain) / steps)
                local.append(ms(took_local) / steps)
                stock.append(ms(took_stock) / steps)
                bench.say(
                    f"round {i}/{rounds}: {ours[-1]:.2f} ms/step; plain Temporal"
                    f" {plain[-1]:.2f}, local activities {local[-1]:.2f}, stock {stock[-1]:.2f}"
                )
    measure = f"per step, {steps}-step chain"
    return [
        Figure(
            NAME, measure, p50(ours), "ms", p95(ours), p50(plain), p95(plain),
            "plain Temporal activities", goal=5.0, goal_ratio=5.0,
        ),
        Figure(
            NAME, measure, p50(ours), "ms", p95(ours), p50(stock), p95(stock),
            "plain Temporal activities, stock dev server", goal_ratio=5.0,
        ),
        Figure(
            NAME, measure, p50(ours), "ms", p95(ours), p50(local), p95(local),
            "plain Temporal local activities (the floor)",
        ),
        Figure(
            NAME, "CPU per step: worker and client", p50(cpu_ours["worker"]), "ms",
            baseline=p50(cpu_local), baseline_name="plain local activities: worker and client",
        ),
        *(
            Figure(NAME, f"CPU per step: {name}", p50(cpu_ours[name]), "ms")
            for name in PROCESSES[1:]
        ),
        Figure(
            NAME, f"whole {steps}-step run", p50(ours) * steps, "ms", p95(ours) * steps,
            p50(plain) * steps, p95(plain) * steps, "plain Temporal activities",
        ),
    ]  # fmt: skip
