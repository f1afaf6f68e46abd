// A small line chart on a canvas: several named series of (time in ms, value) points.
// Written for the dashboard; it draws axes with a few round ticks and nothing else.
"use strict";

const PALETTE = ["#2f7d4a", "#1f5fa8", "#c2562b", "#8a4fb0", "#b08a1f", "#1f9a9a",
                 "#b0306a", "#5a6b1f", "#6b4a2a", "#3a3a8a", "#7a7a7a", "#d04040"];

class Plot {
  constructor(canvas, legend) {
    this.canvas = canvas;
    this.legend = legend;
    this.series = new Map(); // name -> [[t, v], ...] sorted by t
    this.maxPoints = 600;
  }

  clear() {
    this.series.clear();
    this.draw();
  }

  // Sets the value of a series at time t (a later value at the same time replaces it).
  set(name, t, v) {
    if (!Number.isFinite(t) || !Number.isFinite(v)) return;
    let points = this.series.get(name);
    if (!points) { points = []; this.series.set(name, points); }
    let i = points.length;
    while (i > 0 && points[i - 1][0] > t) i--;
    if (i > 0 && points[i - 1][0] === t) points[i - 1][1] = v;
    else points.splice(i, 0, [t, v]);
    if (points.length > this.maxPoints) points.splice(0, points.length - this.maxPoints);
  }

  // Removes the point of a series at time t, if any.
  remove(name, t) {
    const points = this.series.get(name);
    if (!points) return;
    const i = points.findIndex((p) => p[0] === t);
    if (i >= 0) points.splice(i, 1);
  }

  static ticks(lo, hi, count) {
    const span = hi - lo || Math.abs(hi) || 1;
    const raw = span / count;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
    return out;
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth, height = this.canvas.clientHeight;
    this.canvas.width = width * ratio;
    this.canvas.height = height * ratio;
    const g = this.canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.clearRect(0, 0, width, height);
    const names = [...this.series.keys()].sort().slice(0, PALETTE.length);
    let tMin = Infinity, tMax = -Infinity, vMin = Infinity, vMax = -Infinity;
    for (const name of names) {
      for (const [t, v] of this.series.get(name)) {
        tMin = Math.min(tMin, t); tMax = Math.max(tMax, t);
        vMin = Math.min(vMin, v); vMax = Math.max(vMax, v);
      }
    }
    this.legend.replaceChildren(...names.map((name, i) => {
      const item = document.createElement("span");
      item.textContent = name;
      item.style.setProperty("--swatch", PALETTE[i]);
      return item;
    }));
    if (!Number.isFinite(tMin)) {
      g.fillStyle = "#66756a";
      g.fillText("waiting for data…", 12, 20);
      return;
    }
    if (vMin === vMax) { vMin -= 1; vMax += 1; }
    const pad = { left: 52, right: 12, top: 10, bottom: 22 };
    const x = (t) => pad.left + (tMax === tMin ? 0.5 : (t - tMin) / (tMax - tMin)) * (width - pad.left - pad.right);
    const y = (v) => height - pad.bottom - (v - vMin) / (vMax - vMin) * (height - pad.top - pad.bottom);
    g.font = "11px system-ui, sans-serif";
    g.strokeStyle = "#d8e0d9";
    g.fillStyle = "#66756a";
    for (const v of Plot.ticks(vMin, vMax, 5)) {
      g.beginPath(); g.moveTo(pad.left, y(v)); g.lineTo(width - pad.right, y(v)); g.stroke();
      g.fillText(String(+v.toPrecision(6)), 4, y(v) + 4);
    }
    for (const t of Plot.ticks(tMin, tMax, 6)) {
      const label = new Date(t).toISOString().slice(11, 19);
      g.fillText(label, Math.min(x(t) - 22, width - pad.right - 46), height - 6);
    }
    names.forEach((name, i) => {
      g.strokeStyle = PALETTE[i];
      g.lineWidth = 1.5;
      g.beginPath();
      this.series.get(name).forEach(([t, v], j) => (j ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
      g.stroke();
    });
  }
}

window.Plot = Plot;
