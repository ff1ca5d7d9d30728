"""Human-readable rendering of a scenario's result (the JSON form is the dict itself)."""

from __future__ import annotations

from typing import Any

_RATES = ("publish_rate", "confirm_rate", "consume_rate", "delivery_rate", "open_rate")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(result: dict[str, Any]) -> str:
    lines = [
        f"scenario   {result['scenario']}",
        f"broker     {result['uri']}  ({result['broker'].get('product', '?')} "
        f"{result['broker'].get('version', '?')})",
    ]
    params = result["params"]
    if result["scenario"] == "idle-connections":
        lines.append(f"params     connections={params['connections']} hold={params['hold_s']}s")
    elif result["scenario"] == "drain":
        lines.append(f"params     queue={params['queue']} prefetch={params['prefetch']} "
                     f"multi_ack_every={params['multi_ack_every']}")
    else:
        lines.append(
            f"params     duration={params['duration_s']}s warmup={params['warmup_s']}s "
            f"size={params['size_bytes']}B producers={params['producers']} "
            f"rate={params['rate'] or 'unlimited'} persistent={params['persistent']} "
            f"queue_type={params['queue_type']}")
    metrics = result["metrics"]
    for key in _RATES:
        if key in metrics and metrics[key] is not None:
            lines.append(f"{key:<22} {_fmt(metrics[key])} msg/s"
                         if key != "open_rate" else f"{key:<22} {_fmt(metrics[key])} conn/s")
    for key in ("latency_ms", "confirm_latency_ms"):
        if key in metrics:
            lat = metrics[key]
            if lat.get("count"):
                lines.append(
                    f"{key:<22} p50={lat['p50']:.3f} p95={lat['p95']:.3f} "
                    f"p99={lat['p99']:.3f} max={lat['max']:.3f} (n={lat['count']:,})")
            else:
                lines.append(f"{key:<22} no samples")
    for key, value in metrics.items():
        if key in _RATES or key in ("latency_ms", "confirm_latency_ms"):
            continue
        lines.append(f"{key:<22} {_fmt(value)}")
    return "\n".join(lines)
