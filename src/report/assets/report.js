// Renders the flagged patients' sections (a chart and the flags in words) from the JSON in
// #chart-data: marker values on a log scale against days since the TARE, one line per marker,
// TAREs, ULNs, baseline (square) and nadir (diamond), flagged values ringed, censored values as
// open triangles. Sections come a page at a time (and the one a table link points to at once;
// everything before printing), so a report of thousands of patients opens quickly. Text is set
// with textContent only: nothing from the data is ever parsed as HTML.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = { pivka2: "#1f5fa8", dcp: "#0f8a7e", afp: "#c2571a", afp_l3: "#8a3fa0" };
  const W = 720, H = 260, L = 64, R = 16, T = 14, B = 36;
  const PAGE = 100;
  const LT = 1, GT = 2, FLAGGED = 4, BASELINE = 8, NADIR = 16;
  const container = document.getElementById("patients");
  const rendered = new Map();
  let next = 0;

  function svgEl(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const k in attrs) node.setAttribute(k, String(attrs[k]));
    if (parent) parent.appendChild(node);
    return node;
  }
  function htmlEl(name, attrs, parent, content) {
    const node = document.createElement(name);
    for (const k in attrs) node.setAttribute(k, String(attrs[k]));
    if (content !== undefined) node.textContent = content;
    if (parent) parent.appendChild(node);
    return node;
  }
  function text(parent, x, y, content, attrs) {
    const node = svgEl("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
    node.textContent = content;
    return node;
  }
  function addDays(isoDate, days) {
    const d = new Date(isoDate + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + days);
    return d.toISOString().slice(0, 10);
  }
  function niceLog(v) { return Math.pow(10, Math.floor(Math.log10(v))); }

  function chart(p) {
    const values = [], days = p.tares.slice();
    p.series.forEach(s => { s.points.forEach(pt => { if (pt[1] > 0) values.push(pt[1]); days.push(pt[0]); }); if (s.uln > 0) values.push(s.uln); });
    let lo = niceLog(Math.min.apply(null, values)), hi = niceLog(Math.max.apply(null, values)) * 10;
    let d0 = Math.min(-14, Math.min.apply(null, days)), d1 = Math.max(30, Math.max.apply(null, days));
    const pad = (d1 - d0) * 0.03; d0 -= pad; d1 += pad;
    const x = d => L + (d - d0) / (d1 - d0) * (W - L - R);
    const y = v => T + (Math.log10(hi) - Math.log10(Math.max(v, lo))) / (Math.log10(hi) - Math.log10(lo)) * (H - T - B);
    const svg = svgEl("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img" });
    svgEl("title", {}, svg).textContent = "Tumor markers of " + p.id + " (log scale) against days since TARE on " + p.index;
    for (let v = lo; v <= hi * 1.0001; v *= 10) {
      svgEl("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }, svg);
      text(svg, L - 6, y(v) + 4, v >= 1 ? v.toLocaleString("en-US") : String(v), { "text-anchor": "end" });
    }
    const step = (d1 - d0) > 400 ? 90 : 30;
    for (let d = Math.ceil(d0 / step) * step; d <= d1; d += step) {
      svgEl("line", { class: "axis", x1: x(d), x2: x(d), y1: H - B, y2: H - B + 4 }, svg);
      text(svg, x(d), H - B + 16, String(d), { "text-anchor": "middle" });
    }
    text(svg, (L + W - R) / 2, H - 4, "days since TARE (" + p.index + ")", { "text-anchor": "middle" });
    svgEl("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }, svg);
    svgEl("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }, svg);
    p.tares.forEach(d => {
      svgEl("line", { class: "tare", x1: x(d), x2: x(d), y1: T, y2: H - B }, svg);
      text(svg, x(d) + 3, T + 10, "TARE", { fill: "#6b3fa0" });
    });
    p.series.forEach(s => {
      const color = COLORS[s.m] || "#333";
      const notes = new Map(s.notes.map(n => [n[0], n]));
      if (s.uln > 0) {
        svgEl("line", { class: "uln", stroke: color, x1: L, x2: W - R, y1: y(s.uln), y2: y(s.uln) }, svg);
        text(svg, W - R - 2, y(s.uln) - 3, s.label + " ULN " + s.uln, { "text-anchor": "end", fill: color });
      }
      svgEl("path", { class: "line", stroke: color, d: s.points.map((pt, i) => (i ? "L" : "M") + x(pt[0]).toFixed(1) + " " + y(pt[1]).toFixed(1)).join(" ") }, svg);
      s.points.forEach((pt, i) => {
        const cx = x(pt[0]), cy = y(pt[1]), bits = pt[2];
        const censored = bits & LT ? "<" : bits & GT ? ">" : "";
        let mark;
        if (censored) {
          const dir = censored === "<" ? 1 : -1;
          mark = svgEl("path", { class: "censored point", stroke: color, d: "M" + (cx - 5) + " " + (cy - 4 * dir) + " L" + (cx + 5) + " " + (cy - 4 * dir) + " L" + cx + " " + (cy + 5 * dir) + " Z" }, svg);
        } else {
          mark = svgEl("circle", { class: "point", cx: cx, cy: cy, r: 3.2, fill: color }, svg);
        }
        const note = notes.get(i);
        svgEl("title", {}, mark).textContent = s.label + " " + censored + pt[1] + " " + s.unit + " on " + addDays(p.index, pt[0]) +
          " (day " + pt[0] + ")" + (bits & BASELINE ? " — baseline" : "") + (bits & NADIR ? " — nadir" : "") +
          (bits & FLAGGED ? " — evidence of a flag" : "") + (note ? " — note: " + note[2] : "");
        if (bits & BASELINE) svgEl("rect", { x: cx - 6, y: cy - 6, width: 12, height: 12, fill: "none", stroke: color, "stroke-width": 1.5 }, svg);
        if (bits & NADIR) svgEl("path", { d: "M" + cx + " " + (cy - 8) + " L" + (cx + 8) + " " + cy + " L" + cx + " " + (cy + 8) + " L" + (cx - 8) + " " + cy + " Z", fill: "none", stroke: color, "stroke-width": 1.5 }, svg);
        if (bits & FLAGGED) svgEl("circle", { class: "flagged", cx: cx, cy: cy, r: 7 }, svg);
      });
    });
    return svg;
  }

  function section(i) {
    if (rendered.has(i)) return rendered.get(i);
    const p = data[i];
    const node = htmlEl("section", { class: "patient", id: "p-" + p.id });
    const heading = htmlEl("h3", {}, node, p.id);
    if (p.name) htmlEl("span", { class: "name" }, heading, " " + p.name);
    const box = htmlEl("div", { class: "chart-box" }, node);
    box.appendChild(chart(p));
    const list = htmlEl("ul", {}, node);
    p.flags.forEach(f => {
      const item = htmlEl("li", {}, list);
      htmlEl("span", { class: "sev sev-" + f[0] }, item, f[0]);
      item.appendChild(document.createTextNode(" "));
      htmlEl("b", {}, item, f[1] + (f[2] ? " (" + f[2] + ")" : ""));
      item.appendChild(document.createTextNode(" (episode of " + f[3] + ", identified " + f[4] + "): "));
      htmlEl("span", { class: "detail" }, item, f[5]);
    });
    p.series.forEach(s => s.notes.forEach(n => {
      htmlEl("li", { class: "muted" }, list, "Note on " + s.label + " " + addDays(p.index, s.points[n[0]][0]) + " (" + n[1] + "): " + n[2]);
    }));
    rendered.set(i, node);
    return node;
  }

  const more = document.getElementById("more-patients");
  function showPage() {
    const end = Math.min(data.length, next + PAGE);
    for (; next < end; next++) {
      const node = section(next);
      if (!node.isConnected) container.appendChild(node);
    }
    more.hidden = next >= data.length;
    more.textContent = "Show the next " + Math.min(PAGE, data.length - next) + " of " + (data.length - next) + " more patients";
  }
  // A table link to a patient further down: that patient's section, shown at once.
  function showLinked() {
    const id = decodeURIComponent(location.hash.slice(3));
    if (!location.hash.startsWith("#p-")) return;
    const i = data.findIndex(p => p.id === id);
    if (i < 0) return;
    const node = section(i);
    if (!node.isConnected) container.insertBefore(node, container.firstChild);
    node.scrollIntoView();
  }
  more.addEventListener("click", showPage);
  window.addEventListener("hashchange", showLinked);
  window.addEventListener("beforeprint", () => { while (next < data.length) showPage(); });

  const moreRows = document.getElementById("more-rows");
  if (moreRows) moreRows.addEventListener("click", () => {
    const body = document.getElementById("flagged-rows");
    for (let i = body.rows.length; i < data.length; i++) {
      const p = data[i], row = body.insertRow();
      const link = htmlEl("a", { href: "#p-" + p.id }, row.insertCell(), p.id);
      if (p.name) htmlEl("span", { class: "name" }, link, " " + p.name);
      htmlEl("span", { class: "sev sev-" + p.worst }, row.insertCell(), p.worst);
      row.insertCell().textContent = p.latest;
      row.insertCell().textContent = p.flags.map(f => f[1] + (f[2] ? " (" + f[2] + ")" : "")).join(", ");
    }
    moreRows.remove();
  });

  showPage();
  showLinked();
  // performance.now(): milliseconds since the page started loading (the benchmark reads it).
  console.log("report ready: " + data.length + " charts, " + document.querySelectorAll("svg.chart").length +
    " drawn, " + Math.round(performance.now()) + " ms after navigation start");
})();
