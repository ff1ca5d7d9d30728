// A small line chart on a canvas: time on x, values on y, nice round ticks, crisp on HiDPI.
// window.drawChart(canvas, series, {unit}) with series = [{label, color, points: [[ms, v]]}].
(function () {
  "use strict";

  function niceStep(max) {
    if (max <= 0) return 1;
    const raw = max / 4;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  }

  function fmt(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "k";
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }

  function clock(ms) {
    const d = new Date(ms);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0") +
      ":" + String(d.getSeconds()).padStart(2, "0");
  }

  window.drawChart = function (canvas, series, opts) {
    if (!canvas) return; // its page is gone
    opts = opts || {};
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600;
    const h = canvas.clientHeight || 220;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const pad = { l: 48, r: 12, t: 10, b: 24 };
    const all = series.flatMap((s) => s.points);
    const now = Date.now();
    const span = opts.spanMs || 180000;
    const x0 = all.length ? Math.max(Math.min(...all.map((p) => p[0])), now - span) : now - span;
    const x1 = all.length ? Math.max(...all.map((p) => p[0])) : now;
    const maxV = Math.max(1, ...all.map((p) => p[1]));
    const step = niceStep(maxV);
    const top = Math.ceil(maxV / step) * step;
    const X = (t) => pad.l + ((t - x0) / Math.max(x1 - x0, 1)) * (w - pad.l - pad.r);
    const Y = (v) => pad.t + (1 - v / top) * (h - pad.t - pad.b);

    ctx.font = "11px -apple-system, Segoe UI, Roboto, sans-serif";
    ctx.fillStyle = "#67727e";
    ctx.strokeStyle = "#eef1f3";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let v = 0; v <= top + 1e-9; v += step) {
      const y = Math.round(Y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke();
      ctx.fillText(fmt(v) + (opts.unit || ""), pad.l - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const ticks = 4;
    for (let i = 0; i <= ticks; i++) {
      const t = x0 + ((x1 - x0) * i) / ticks;
      ctx.fillText(clock(t), Math.min(Math.max(X(t), pad.l + 20), w - pad.r - 20), h - pad.b + 6);
    }
    if (!all.length) {
      ctx.fillText("collecting samples…", w / 2, h / 2 - 8);
      return;
    }
    for (const s of series) {
      if (!s.points.length) continue;
      const pts = s.points.slice().sort((a, b) => a[0] - b[0]);
      ctx.beginPath();
      pts.forEach((p, i) => (i ? ctx.lineTo(X(p[0]), Y(p[1])) : ctx.moveTo(X(p[0]), Y(p[1]))));
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.stroke();
      ctx.lineTo(X(pts[pts.length - 1][0]), Y(0));
      ctx.lineTo(X(pts[0][0]), Y(0));
      ctx.closePath();
      ctx.globalAlpha = 0.08;
      ctx.fillStyle = s.color;
      ctx.fill();
      ctx.globalAlpha = 1;
    }
    canvas.dataset.points = String(all.length);
    canvas.dataset.max = String(maxV);
  };
})();
