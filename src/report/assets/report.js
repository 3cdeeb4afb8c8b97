// The worklist and the patient view. The page holds two data blocks: #worklist-data, what a
// row needs (parsed at load), and #patient-details, one JSON line per patient (chart points,
// flag sentences) placed after this script and parsed only when that patient is opened or
// printed: 16,000 patients' details are most of the page, and parsing them all made the
// worklist wait. Rows are built a page at a time. The view (search, filters, sort, page, open
// patient) lives in the URL fragment (#/?q=...), so a link or a reload reopens it. Text is set
// with textContent only: nothing from the data is ever parsed as HTML.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("worklist-data").textContent);
  const labels = JSON.parse(document.getElementById("labels").textContent);
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = { pivka2: "#1f5fa8", dcp: "#0f7a70", afp: "#b04e14", afp_l3: "#8a3fa0", albumin: "#4a6b1f", bilirubin: "#9a6a00" };
  // T leaves room above the plot for the legend row and for a nadir diamond (12 px) around a
  // value at the top of the axis, so no mark covers the legend.
  const W = 720, PH = 170, L = 92, R = 150, T = 34, B = 30;
  const PAGE = 50;
  // "Print the patients shown" prints at most this many: thousands of pages freeze a browser.
  const PRINT_MAX = 200;
  // A log axis starts no lower than this; a value below it (0 among them) is drawn on the
  // floor and says so.
  const LOG_FLOOR = 0.001;
  const LT = 1, GT = 2, FLAGGED = 4, BASELINE = 8, NADIR = 16;
  const SEV_RANK = { high: 3, moderate: 2, low: 1 };
  const KEYS = ["q", "sev", "flag", "marker", "resp", "review", "from", "to"];
  const $ = id => document.getElementById(id);
  // A value as the source gave it (the shortest decimal that is the number, never rounded),
  // thousands grouped: the figure the sentences and the CSV show (docs/rules.md §4).
  const NUMBER = new Intl.NumberFormat("en-US", { maximumFractionDigits: 20, useGrouping: true });
  // -0 (a source may send it) reads 0, as in the CSV and the sentences.
  const num = v => NUMBER.format(v === 0 ? 0 : v);
  const plural = (n, word) => num(n) + " " + word + (n === 1 ? "" : "s");

  // Search is case- and accent-insensitive: "jose" finds José, "ostergaard" Østergaard,
  // "lukasz" Łukasz (letters that do not decompose are spelled out). Folded on the first search.
  const SPELLED = { "ø": "o", "ł": "l", "đ": "d", "ð": "d", "ħ": "h", "ı": "i", "ŧ": "t", "ß": "ss", "æ": "ae", "œ": "oe", "þ": "th" };
  const fold = s => s.normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase().replace(/[øłđðħıŧßæœþ]/g, c => SPELLED[c]);
  const searchText = p => p.search === undefined ? (p.search = fold([p.id, p.name || "", p.mrn || ""].join("\u0000"))) : p.search;
  const reviewOf = p => p.review ? p.review[0] : "not reviewed";
  const byId = new Map(data.map((p, i) => [p.id, i]));

  // One patient's details, parsed from its line of #patient-details when first needed.
  let detailsText = null;
  function detailOf(p) {
    if (!p.detail) {
      if (detailsText === null) detailsText = $("patient-details").textContent;
      p.detail = JSON.parse(detailsText.substr(p.d[0], p.d[1]));
    }
    return p.detail;
  }
  // The details come after this script: a patient opened from a link at load, or while the
  // parser still reads them (their element exists, its text not yet whole), waits for them.
  function whenDetails(then) {
    if (document.readyState !== "loading") then();
    else document.addEventListener("DOMContentLoaded", then, { once: true });
  }

  function el(name, attrs, parent, content) {
    const node = document.createElement(name);
    for (const k in attrs || {}) node.setAttribute(k, String(attrs[k]));
    if (content !== undefined) node.textContent = content;
    if (parent) parent.appendChild(node);
    return node;
  }
  function svgEl(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const k in attrs) node.setAttribute(k, String(attrs[k]));
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
  const markerLabel = m => (labels.markers[m] || [m])[0];
  const unitOf = m => (labels.markers[m] || ["", ""])[1];
  const flagLabel = (code, marker) => labels.flags[code] + (marker ? " (" + markerLabel(marker) + ")" : "");
  const valueText = v => markerLabel(v[0]) + " " + v[1] + " " + unitOf(v[0]);

  const SORT_KEYS = {
    // Folded like the search: "Ana Émile" sorts beside "Ana Emile", not after "Ana Zhang".
    name: p => fold(p.name || p.id),
    mrn: p => p.mrn || "",
    birth: p => p.birth || "",
    worst: p => SEV_RANK[p.worst],
    review: reviewOf,
    tare: p => p.index,
    latest: p => p.latest,
  };

  // ---- state <-> URL fragment ----
  let state = readHash();
  function readHash() {
    const s = { sort: "", dir: "asc", page: 0, p: "" };
    KEYS.forEach(k => { s[k] = ""; });
    if (!location.hash.startsWith("#/?")) return s;
    const params = new URLSearchParams(location.hash.slice(3));
    KEYS.concat(["sort", "dir", "p"]).forEach(k => { if (params.has(k)) s[k] = params.get(k); });
    s.page = Math.max(0, parseInt(params.get("page") || "0", 10) || 0);
    // A link edited by hand or from another version: a value no control offers is dropped,
    // so no hidden filter empties the list and no key reaches an object's prototype.
    if (!Object.prototype.hasOwnProperty.call(SORT_KEYS, s.sort)) s.sort = "";
    if (s.dir !== "desc") s.dir = "asc";
    // A calendar date only: Date.parse rolls 2026-02-31 over to March, so the date must read back the same.
    const isDay = v => /^\d{4}-\d{2}-\d{2}$/.test(v) && !isNaN(Date.parse(v + "T00:00:00Z")) && new Date(v + "T00:00:00Z").toISOString().slice(0, 10) === v;
    ["from", "to"].forEach(k => { if (!isDay(s[k])) s[k] = ""; });
    KEYS.forEach(k => {
      const c = document.querySelector("select[data-key='" + k + "']");
      if (c && s[k] && !Array.from(c.options).some(o => o.value === s[k])) s[k] = "";
    });
    return s;
  }
  // A patient opened is a new history entry (the browser's Back returns to the list); every
  // other change replaces the current one.
  function writeHash(push) {
    const params = new URLSearchParams();
    KEYS.concat(["sort", "dir", "p"]).forEach(k => { if (state[k] && !(k === "dir" && !state.sort)) params.set(k, state[k]); });
    if (state.page) params.set("page", String(state.page));
    const hash = "#/?" + params.toString();
    if (location.hash !== hash) history[push ? "pushState" : "replaceState"](null, "", hash);
  }

  // ---- filter and sort ----
  let shown = [];
  let query = "";
  function matches(p) {
    if (query && !searchText(p).includes(query)) return false;
    if (state.sev && p.worst !== state.sev) return false;
    // A row's flags are [code, marker?]; its values [marker, value, response].
    // A flag and a marker filtered together mean that flag on that marker.
    if (state.flag && !p.flags.some(f => f[0] === state.flag && (!state.marker || f[1] === state.marker))) return false;
    if (state.marker && state.resp) {
      // Marker and response filtered together mean that marker's response.
      if (!p.values.some(v => v[0] === state.marker && v[2] === state.resp)) return false;
    } else {
      if (state.marker && !state.flag && !p.flags.some(f => f[1] === state.marker)) return false;
      if (state.resp && !p.values.some(v => v[2] === state.resp)) return false;
    }
    if (state.review && reviewOf(p) !== state.review) return false;
    if (state.from && p.index < state.from) return false;
    if (state.to && p.index > state.to) return false;
    return true;
  }
  function apply() {
    const start = performance.now();
    const list = [];
    query = fold(state.q.trim());
    for (let i = 0; i < data.length; i++) if (matches(data[i])) list.push(i);
    const key = SORT_KEYS[state.sort];
    if (key) {
      const sign = state.dir === "desc" ? -1 : 1;
      const keys = new Map(list.map(i => [i, key(data[i])]));
      // Blanks (no MRN, no birth date) last in either direction, as a spreadsheet puts them;
      // ties keep the report's order (most severe, then most recent first).
      const blank = v => v === "" || v === undefined || v === null;
      list.sort((a, b) => {
        const x = keys.get(a), y = keys.get(b);
        if (blank(x) !== blank(y)) return blank(x) ? 1 : -1;
        return x < y ? -sign : x > y ? sign : a - b;
      });
    }
    shown = list;
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    if (state.page >= pages) state.page = pages - 1;
    renderRows();
    writeHash();
    // The benchmark and the browser test read how long one filter took, in the page.
    window.tmmLastFilterMs = performance.now() - start;
  }

  function renderRows() {
    const body = $("worklist-rows");
    const rows = document.createDocumentFragment();
    const from = state.page * PAGE, to = Math.min(shown.length, from + PAGE);
    for (let k = from; k < to; k++) {
      const p = data[shown[k]], row = el("tr", { "data-id": p.id }, rows);
      const who = el("td", {}, row);
      const open = el("a", { href: "#/?p=" + encodeURIComponent(p.id), class: "open", "data-id": p.id }, who, p.name || p.id);
      open.addEventListener("click", e => { e.preventDefault(); openPatient(p.id); });
      if (p.name) el("div", { class: "muted small" }, who, p.id);
      el("td", {}, row, p.mrn || "");
      el("td", { class: "date" }, row, p.birth || "");
      el("span", { class: "sev sev-" + p.worst }, el("td", {}, row), p.worst);
      el("td", {}, row, p.flags.map(f => flagLabel(f[0], f[1])).filter((x, i, a) => a.indexOf(x) === i).join(", "));
      // Each value with its unit on one line ("70 ng/mL", never "70" over "ng/mL").
      const latest = el("td", {}, row);
      p.values.forEach((v, i) => { if (i) latest.append("; "); el("span", { class: "value" }, latest, valueText(v)); });
      el("td", {}, row, reviewOf(p) + (p.review && p.review[1] ? ": " + p.review[1] : ""));
      el("td", { class: "date" }, row, p.index);
      el("td", { class: "date" }, row, p.latest);
    }
    body.replaceChildren(rows);
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    $("count").textContent = num(shown.length) + " of " + num(data.length) + " flagged patients shown";
    $("page-info").textContent = "page " + num(state.page + 1) + " of " + num(pages);
    $("prev-page").disabled = state.page === 0;
    $("next-page").disabled = state.page >= pages - 1;
    document.querySelectorAll("th[data-sort]").forEach(th => {
      th.setAttribute("aria-sort", th.dataset.sort === state.sort ? (state.dir === "desc" ? "descending" : "ascending") : "none");
    });
  }

  // ---- charts: one panel per unit, each with its axis, legend and limits ----
  function panels(p, d) {
    const groups = new Map();
    d.series.forEach(s => {
      const unit = unitOf(s.m);
      if (!groups.has(unit)) groups.set(unit, []);
      groups.get(unit).push(s);
    });
    const days = d.tares.slice();
    d.series.forEach(s => s.points.forEach(pt => days.push(pt[0])));
    let d0 = Math.min(-14, Math.min.apply(null, days)), d1 = Math.max(30, Math.max.apply(null, days));
    const pad = (d1 - d0) * 0.03; d0 -= pad; d1 += pad;
    const box = el("div", { class: "chart-box" });
    groups.forEach((list, unit) => box.appendChild(panel(p, d, list, unit, d0, d1)));
    return box;
  }
  // A tick's value without the noise of adding steps (0.1 + 0.2), for its label.
  const tidy = v => Number(v.toPrecision(12));
  function panel(p, d, list, unit, d0, d1) {
    const reild = list.some(s => s.m === "bilirubin") && d.flags.some(f => f[1] === "possible-reild");
    const log = !list.some(s => s.m === "albumin" || s.m === "bilirubin");
    const values = [];
    list.forEach(s => { s.points.forEach(pt => { if (!log || pt[1] >= LOG_FLOOR) values.push(pt[1]); }); if (s.uln > 0) values.push(s.uln); });
    if (reild) values.push(labels.reild_limit);
    if (reild) list.forEach(s => { if (s.rl > 0) values.push(s.rl); });
    let lo, hi, ticks = [];
    if (log) {
      // Whole decades; at most six labelled, so the labels never crowd.
      const e0 = values.length ? Math.floor(Math.log10(Math.min.apply(null, values))) : 0;
      let e1 = values.length ? Math.ceil(Math.log10(Math.max.apply(null, values)) - 1e-9) : 1;
      if (e1 <= e0) e1 = e0 + 1;
      lo = Math.pow(10, e0); hi = Math.pow(10, e1);
      const every = Math.ceil((e1 - e0 + 1) / 6);
      for (let e = e1; e >= e0; e -= every) ticks.push(tidy(Math.pow(10, e)));
    } else {
      lo = 0; hi = (values.length ? Math.max.apply(null, values) : 0) * 1.15;
      if (!(hi > 0)) hi = 1;
      const step = Math.pow(10, Math.floor(Math.log10(hi / 2)));
      for (let k = 0; k * step <= hi; k++) ticks.push(tidy(k * step));
    }
    const x = day => L + (day - d0) / (d1 - d0) * (W - L - R);
    const y = log
      ? v => T + (Math.log10(hi) - Math.log10(Math.max(v, lo))) / (Math.log10(hi) - Math.log10(lo)) * (PH - T - B)
      : v => T + (hi - v) / (hi - lo) * (PH - T - B);
    const names = list.map(s => markerLabel(s.m)).join(" and ");
    const svg = svgEl("svg", { class: "chart", viewBox: "0 0 " + W + " " + PH, role: "img", "aria-label": names + " (" + unit + ") against days since TARE on " + p.index });
    ticks.forEach(v => {
      svgEl("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }, svg);
      text(svg, L - 6, y(v) + 4, num(v), { "text-anchor": "end" });
    });
    text(svg, 12, (T + PH - B) / 2, unit + (log ? " (log)" : ""), { transform: "rotate(-90 12 " + (T + PH - B) / 2 + ")", "text-anchor": "middle" });
    const step = (d1 - d0) > 400 ? 90 : 30;
    for (let day = Math.ceil(d0 / step) * step; day <= d1; day += step) {
      svgEl("line", { class: "axis", x1: x(day), x2: x(day), y1: PH - B, y2: PH - B + 4 }, svg);
      text(svg, x(day), PH - B + 15, String(day), { "text-anchor": "middle" });
    }
    text(svg, W - R, PH - 2, "days since TARE (" + p.index + ")", { "text-anchor": "end" });
    svgEl("line", { class: "axis", x1: L, x2: W - R, y1: PH - B, y2: PH - B }, svg);
    svgEl("line", { class: "axis", x1: L, x2: L, y1: T, y2: PH - B }, svg);
    d.tares.forEach(day => svgEl("line", { class: "tare", x1: x(day), x2: x(day), y1: T, y2: PH - B }, svg));
    // Legend above the plot; limit labels in the right margin, never over the data.
    let lx = L;
    list.forEach(s => {
      svgEl("line", { x1: lx, x2: lx + 16, y1: 10, y2: 10, stroke: COLORS[s.m], "stroke-width": 2.5 }, svg);
      lx += 20 + text(svg, lx + 20, 14, markerLabel(s.m), {}).textContent.length * 6.5 + 10;
    });
    svgEl("line", { class: "tare", x1: lx, x2: lx, y1: 4, y2: 16 }, svg);
    lx += 5 + text(svg, lx + 5, 14, "TARE", {}).textContent.length * 6.5 + 10;
    const belowAxis = log && list.some(s => s.points.some(pt => pt[1] < lo));
    if (belowAxis) {
      svgEl("path", { class: "below-axis", d: floorMark(lx + 5, 10) }, svg);
      text(svg, lx + 14, 14, "below the axis (drawn on its floor)", {});
    }
    const limits = [];
    list.forEach(s => { if (s.uln > 0) limits.push([s.uln, markerLabel(s.m) + " ULN " + num(s.uln), COLORS[s.m], "uln"]); });
    if (reild) limits.push([labels.reild_limit, "REILD limit " + num(labels.reild_limit), "#b3261e", "limit"]);
    // The other REILD limit: so many times the bilirubin baseline (the flag also asks the value to be above the ULN).
    if (reild) list.forEach(s => { if (s.rl > 0) limits.push([s.rl, num(labels.reild_multiple) + " × baseline " + num(s.rl), "#b3261e", "limit"]); });
    let lastY = -Infinity;
    limits.sort((a, b) => y(a[0]) - y(b[0])).forEach(l => {
      svgEl("line", { class: l[3], stroke: l[2], x1: L, x2: W - R, y1: y(l[0]), y2: y(l[0]) }, svg);
      const ly = Math.max(y(l[0]) + 4, lastY + 12);
      lastY = ly;
      text(svg, W - R + 6, ly, l[1] + " " + unit, { fill: l[2] });
    });
    list.forEach(s => {
      const color = COLORS[s.m] || "#333";
      const notes = new Map(s.notes.map(n => [n[0], n]));
      svgEl("path", { class: "line", stroke: color, d: s.points.map((pt, i) => (i ? "L" : "M") + x(pt[0]).toFixed(1) + " " + y(pt[1]).toFixed(1)).join(" ") }, svg);
      s.points.forEach((pt, i) => {
        const cx = x(pt[0]), cy = y(pt[1]), bits = pt[2];
        const censored = bits & LT ? "<" : bits & GT ? ">" : "";
        const below = log && pt[1] < lo;
        // The ring of a flag's evidence first, then the baseline's square and the nadir's
        // diamond drawn around it, then the point: no mark hides another.
        if (bits & FLAGGED) svgEl("circle", { class: "flagged", cx: cx, cy: cy, r: 7 }, svg);
        if (bits & BASELINE) svgEl("rect", { class: "baseline", x: cx - 10, y: cy - 10, width: 20, height: 20, fill: "none", stroke: color, "stroke-width": 1.5 }, svg);
        if (bits & NADIR) svgEl("path", { class: "nadir", d: "M" + cx + " " + (cy - 12) + " L" + (cx + 12) + " " + cy + " L" + cx + " " + (cy + 12) + " L" + (cx - 12) + " " + cy + " Z", fill: "none", stroke: color, "stroke-width": 1.5 }, svg);
        let mark;
        if (below) {
          mark = svgEl("path", { class: "below-axis point", stroke: color, d: floorMark(cx, cy - 5) }, svg);
        } else if (censored) {
          const dir = censored === "<" ? 1 : -1;
          mark = svgEl("path", { class: "censored point", stroke: color, d: "M" + (cx - 5) + " " + (cy - 4 * dir) + " L" + (cx + 5) + " " + (cy - 4 * dir) + " L" + cx + " " + (cy + 5 * dir) + " Z" }, svg);
        } else {
          mark = svgEl("circle", { class: "point", cx: cx, cy: cy, r: 3.2, fill: color }, svg);
        }
        const note = notes.get(i);
        // The value as the source gave it, with its unit and date; never rounded for display.
        svgEl("title", {}, mark).textContent = markerLabel(s.m) + " " + censored + num(pt[1]) + " " + unit +
          (below ? " (below the log axis, drawn on its floor)" : "") + " on " + addDays(p.index, pt[0]) +
          " (day " + pt[0] + ")" + (bits & BASELINE ? ": baseline" : "") + (bits & NADIR ? ": nadir" : "") +
          (bits & FLAGGED ? ": evidence of a flag" : "") + (note ? "; note: " + note[2] : "");
      });
    });
    return svg;
  }
  // An arrow pointing down onto (x, y + 9): a value below a log axis (not a triangle, which
  // marks a censored value).
  const floorMark = (x, y) => "M" + x + " " + y + " L" + x + " " + (y + 9) + " M" + (x - 4) + " " + (y + 5) + " L" + x + " " + (y + 9) + " L" + (x + 4) + " " + (y + 5);

  // ---- one patient: heading, charts, flags in words, values with units ----
  function patientDetail(p, headingTag) {
    const d = detailOf(p);
    const sub = headingTag === "h2" ? "h3" : "h4";
    const node = el("article", { class: "patient", "data-id": p.id });
    el(headingTag, {}, node, (p.name || p.id));
    el("p", { class: "who" }, node, "Id " + p.id + (p.mrn ? " · MRN " + p.mrn : "") + (p.birth ? " · born " + p.birth : "") +
      " · worst " + p.worst + " · TARE " + p.index + " · review: " + reviewOf(p) + (p.review && p.review[1] ? " (" + p.review[1] + ")" : ""));
    node.appendChild(panels(p, d));
    el("p", { class: "muted small legend-note" }, node, "Square: baseline; diamond: nadir; red ring: evidence of a flag; open triangle: a censored value (< or >); down arrow: a value below the log axis; dashed purple: TARE; dotted: upper limit of normal.");
    el(sub, {}, node, "Flags");
    const list = el("ul", { class: "flags" }, node);
    d.flags.forEach(f => {
      const item = el("li", {}, list);
      el("span", { class: "sev sev-" + f[0] }, item, f[0]);
      item.appendChild(document.createTextNode(" "));
      el("b", {}, item, flagLabel(f[1], f[2]));
      item.appendChild(document.createTextNode(" (episode of " + f[3] + ", identified " + f[4] + "): "));
      el("span", { class: "detail" }, item, f[5]);
    });
    el(sub, {}, node, "Values");
    const table = el("table", { class: "values" }, el("div", { class: "values-box" }, node));
    const head = el("tr", {}, el("thead", {}, table));
    ["Marker", "Date", "Day", "Value", "Unit", "Note"].forEach(h => el("th", { scope: "col" }, head, h));
    const body = el("tbody", {}, table);
    d.series.forEach(s => {
      const notes = new Map(s.notes.map(n => [n[0], n[2]]));
      s.points.forEach((pt, i) => {
        const row = el("tr", {}, body);
        el("td", {}, row, markerLabel(s.m));
        el("td", {}, row, addDays(p.index, pt[0]));
        el("td", { class: "num" }, row, String(pt[0]));
        el("td", { class: "num" }, row, (pt[2] & LT ? "<" : pt[2] & GT ? ">" : "") + num(pt[1]));
        el("td", {}, row, unitOf(s.m));
        el("td", {}, row, [pt[2] & BASELINE ? "baseline" : "", pt[2] & NADIR ? "nadir" : "", pt[2] & FLAGGED ? "flag evidence" : "", notes.get(i) || ""].filter(x => x).join("; "));
      });
    });
    return node;
  }

  let lastOpened = "";
  function openPatient(id) {
    state.p = id;
    lastOpened = id;
    writeHash(true);
    showPatient();
  }
  function showPatient() {
    const view = $("patient-view");
    const i = byId.get(state.p);
    if (!state.p || i === undefined) {
      const wasOpen = !view.hidden;
      view.hidden = true; view.replaceChildren(); $("worklist").hidden = false; document.body.classList.remove("patient-open");
      // Back on the list, the keyboard is where it was: on the patient just closed (else,
      // a patient opened from a link, on the search box; never lost on the page's body).
      const link = lastOpened ? document.querySelector("a.open[data-id='" + CSS.escape(lastOpened) + "']") : null;
      if (wasOpen) (link || $("f-q")).focus();
      return;
    }
    whenDetails(() => {
      if (state.p !== data[i].id) return;
      lastOpened = state.p;
      const back = el("button", { type: "button", id: "back" }, null, "Back to the worklist");
      back.addEventListener("click", () => { state.p = ""; writeHash(); showPatient(); });
      view.replaceChildren(back, patientDetail(data[i], "h2"));
      view.hidden = false;
      $("worklist").hidden = true;
      document.body.classList.add("patient-open");
      back.focus();
    });
  }

  // ---- print: the open patient, or the patients shown (at most PRINT_MAX), one page each ----
  function preparePrint(indices, note) {
    const area = $("print-area");
    const pages = document.createDocumentFragment();
    indices.forEach((i, k) => {
      const page = el("section", { class: "print-page" }, pages);
      el("p", { class: "print-as-of" }, page, "TARE marker audit report, as of " + labels.as_of);
      if (k === 0 && note) el("p", { class: "print-note" }, page, note);
      page.appendChild(patientDetail(data[i], "h2"));
    });
    area.replaceChildren(pages);
    document.body.classList.add("printing");
  }
  function printShown(thenPrint) {
    if (shown.length === 0) {
      $("print-note").textContent = "No patient is shown: nothing to print. Clear the search or the filters first.";
      return;
    }
    const note = shown.length > PRINT_MAX
      ? "Printing the first " + num(PRINT_MAX) + " of the " + plural(shown.length, "patient") + " shown: at most " +
        num(PRINT_MAX) + " are printed at a time. Narrow the search or the filters to print the others."
      : "";
    $("print-note").textContent = note;
    whenDetails(() => { preparePrint(shown.slice(0, PRINT_MAX), note); if (thenPrint) window.print(); });
  }
  window.tmmPrintShown = () => printShown(false);
  window.addEventListener("afterprint", () => { document.body.classList.remove("printing"); $("print-area").replaceChildren(); });
  $("print-shown").addEventListener("click", () => printShown(true));

  // ---- controls ----
  const reviews = Array.from(new Set(data.map(reviewOf))).sort();
  reviews.forEach(r => el("option", { value: r }, $("f-review"), r));
  function syncControls() {
    KEYS.forEach(k => { const c = document.querySelector("[data-key='" + k + "']"); if (c) c.value = state[k]; });
  }
  document.querySelectorAll("#filters [data-key]").forEach(control => {
    control.addEventListener(control.tagName === "SELECT" || control.type === "date" ? "change" : "input", () => {
      state[control.dataset.key] = control.value;
      state.page = 0;
      apply();
    });
  });
  $("filters").addEventListener("submit", e => e.preventDefault());
  $("clear-filters").addEventListener("click", () => { KEYS.forEach(k => { state[k] = ""; }); state.page = 0; syncControls(); apply(); });
  document.querySelectorAll("th[data-sort] button").forEach(button => {
    button.addEventListener("click", () => {
      const key = button.parentElement.dataset.sort;
      state.dir = state.sort === key && state.dir === "asc" ? "desc" : "asc";
      state.sort = key;
      state.page = 0;
      apply();
    });
  });
  $("prev-page").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); apply(); });
  $("next-page").addEventListener("click", () => { state.page += 1; apply(); });
  // Section links scroll without replacing the view kept in the fragment.
  document.querySelectorAll("nav a").forEach(a => a.addEventListener("click", e => {
    const target = $(a.getAttribute("href").slice(1));
    if (!target) return;
    e.preventDefault();
    if (a.getAttribute("href") === "#worklist") { state.p = ""; writeHash(); showPatient(); }
    target.scrollIntoView();
  }));
  window.addEventListener("hashchange", () => { if (location.hash.startsWith("#/?")) { state = readHash(); syncControls(); apply(); showPatient(); } });

  // Read again now that every control has its options (the review statuses come from the data).
  state = readHash();
  syncControls();
  apply();
  showPatient();
  // performance.now(): milliseconds since navigation start (the benchmark reads it).
  window.tmmReadyMs = performance.now();
  console.log("report ready: " + data.length + " flagged patients, " + shown.length + " shown, " + Math.round(window.tmmReadyMs) + " ms after navigation start");
})();
