// Draws one SVG chart per flagged patient from the JSON in #chart-data: marker values on a log
// scale against days since the TARE, one line per marker, TAREs, ULNs, baseline and nadir,
// flagged values ringed, censored values as open triangles. Charts are drawn when they come
// into view (all at once for a small report, and before printing). Text is set with
// textContent only: nothing from the data is ever parsed as HTML.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = { pivka2: "#1f5fa8", dcp: "#0f8a7e", afp: "#c2571a", afp_l3: "#8a3fa0" };
  const W = 720, H = 260, L = 64, R = 16, T = 14, B = 36;

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }
  function text(parent, x, y, content, attrs) {
    const node = el("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
    node.textContent = content;
    return node;
  }
  function niceLog(v) { return Math.pow(10, Math.floor(Math.log10(v))); }

  function draw(box) {
    const chart = data[Number(box.dataset.chart)];
    if (!chart || box.dataset.drawn) return;
    box.dataset.drawn = "1";
    const values = [];
    chart.series.forEach(s => { s.points.forEach(p => { if (p.value > 0) values.push(p.value); }); if (s.uln > 0) values.push(s.uln); });
    const days = [];
    chart.series.forEach(s => s.points.forEach(p => days.push(p.day)));
    chart.tares.forEach(d => days.push(d));
    let lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    lo = niceLog(lo); hi = niceLog(hi) * 10;
    let d0 = Math.min(-14, Math.min.apply(null, days)), d1 = Math.max(30, Math.max.apply(null, days));
    const pad = (d1 - d0) * 0.03; d0 -= pad; d1 += pad;
    const x = d => L + (d - d0) / (d1 - d0) * (W - L - R);
    const y = v => T + (Math.log10(hi) - Math.log10(Math.max(v, lo))) / (Math.log10(hi) - Math.log10(lo)) * (H - T - B);
    const svg = el("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img" });
    const title = el("title", {}, svg);
    title.textContent = "Tumor markers of " + box.dataset.patient + " (log scale) against days since TARE on " + chart.index_date;
    for (let v = lo; v <= hi * 1.0001; v *= 10) {
      el("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }, svg);
      text(svg, L - 6, y(v) + 4, v >= 1 ? v.toLocaleString("en-US") : String(v), { "text-anchor": "end" });
    }
    const step = (d1 - d0) > 400 ? 90 : 30;
    for (let d = Math.ceil(d0 / step) * step; d <= d1; d += step) {
      el("line", { class: "axis", x1: x(d), x2: x(d), y1: H - B, y2: H - B + 4 }, svg);
      text(svg, x(d), H - B + 16, String(d), { "text-anchor": "middle" });
    }
    text(svg, (L + W - R) / 2, H - 4, "days since TARE (" + chart.index_date + ")", { "text-anchor": "middle" });
    el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }, svg);
    el("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }, svg);
    chart.tares.forEach(d => {
      el("line", { class: "tare", x1: x(d), x2: x(d), y1: T, y2: H - B }, svg);
      text(svg, x(d) + 3, T + 10, "TARE", { fill: "#6b3fa0" });
    });
    chart.series.forEach(s => {
      const color = COLORS[s.marker] || "#333";
      if (s.uln > 0) {
        el("line", { class: "uln", stroke: color, x1: L, x2: W - R, y1: y(s.uln), y2: y(s.uln) }, svg);
        text(svg, W - R - 2, y(s.uln) - 3, s.label + " ULN " + s.uln, { "text-anchor": "end", fill: color });
      }
      const path = s.points.map((p, i) => (i ? "L" : "M") + x(p.day).toFixed(1) + " " + y(p.value).toFixed(1)).join(" ");
      el("path", { class: "line", stroke: color, d: path }, svg);
      s.points.forEach(p => {
        const cx = x(p.day), cy = y(p.value);
        let mark;
        if (p.censored) {
          const dir = p.censored === "<" ? 1 : -1;
          mark = el("path", { class: "censored point", stroke: color, d: "M" + (cx - 5) + " " + (cy - 4 * dir) + " L" + (cx + 5) + " " + (cy - 4 * dir) + " L" + cx + " " + (cy + 5 * dir) + " Z" }, svg);
        } else {
          mark = el("circle", { class: "point", cx: cx, cy: cy, r: 3.2, fill: color }, svg);
        }
        const tip = el("title", {}, mark);
        tip.textContent = s.label + " " + p.censored + p.value + " " + s.unit + " on " + p.date + " (day " + p.day + ")" +
          (p.role ? " — " + p.role : "") + (p.flagged ? " — evidence of a flag" : "") + (p.note ? " — note: " + p.note : "");
        if (p.role.indexOf("baseline") >= 0) {
          el("rect", { x: cx - 6, y: cy - 6, width: 12, height: 12, fill: "none", stroke: color, "stroke-width": 1.5 }, svg);
        }
        if (p.role.indexOf("nadir") >= 0) {
          el("path", { d: "M" + cx + " " + (cy - 8) + " L" + (cx + 8) + " " + cy + " L" + cx + " " + (cy + 8) + " L" + (cx - 8) + " " + cy + " Z", fill: "none", stroke: color, "stroke-width": 1.5 }, svg);
        }
        if (p.flagged) el("circle", { class: "flagged", cx: cx, cy: cy, r: 7 }, svg);
      });
    });
    box.textContent = "";
    box.appendChild(svg);
  }

  const boxes = Array.prototype.slice.call(document.querySelectorAll(".chart-box"));
  const drawAll = () => boxes.forEach(draw);
  if (boxes.length <= 300 || !("IntersectionObserver" in window)) {
    drawAll();
  } else {
    const seen = new IntersectionObserver(entries => entries.forEach(e => {
      if (e.isIntersecting) { draw(e.target); seen.unobserve(e.target); }
    }), { rootMargin: "600px" });
    boxes.forEach(b => seen.observe(b));
  }
  window.addEventListener("beforeprint", drawAll);
  // performance.now(): milliseconds since the page started loading (the benchmark reads it).
  console.log("report ready: " + boxes.length + " charts, " + document.querySelectorAll("svg.chart").length +
    " drawn, " + Math.round(performance.now()) + " ms after navigation start");
})();
