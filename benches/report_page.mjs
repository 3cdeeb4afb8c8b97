// Headless chromium on a report.html over the DevTools protocol: prints, as JSON, the time from
// navigation start to the end of the page's script (window.tmmReadyMs: the worklist usable),
// to the end of parsing (DOMContentLoaded: the patients' details, after the script, read too),
// the time one filter took in the page (window.tmmLastFilterMs, severity "high") and the time
// opening the first patient shown took (its details parsed and drawn), each measured by the page.
//   node --experimental-websocket benches/report_page.mjs /path/to/report.html
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const page = process.argv[2];
const profile = mkdtempSync(join(tmpdir(), "tmm-bench-"));
const browser = spawn("chromium", ["--headless=new", "--remote-debugging-port=0", "--no-sandbox", "--disable-gpu",
  "--disable-dev-shm-usage", "--no-first-run", "--user-data-dir=" + profile, "about:blank"], { stdio: ["ignore", "ignore", "pipe"] });
const url = await new Promise((resolve, reject) => {
  let seen = "";
  browser.stderr.on("data", chunk => {
    seen += chunk;
    const m = seen.match(/DevTools listening on (ws:\/\/\S+)/);
    if (m) resolve(m[1]);
  });
  browser.on("exit", () => reject(new Error("chromium exited: " + seen)));
});
const ws = new WebSocket(url);
await new Promise(r => ws.addEventListener("open", r));
let id = 0;
const pending = new Map();
ws.addEventListener("message", e => {
  const msg = JSON.parse(e.data);
  if (msg.id && pending.has(msg.id)) { pending.get(msg.id)(msg); pending.delete(msg.id); }
});
function send(method, params = {}, sessionId) {
  const msg = { id: ++id, method, params };
  if (sessionId) msg.sessionId = sessionId;
  ws.send(JSON.stringify(msg));
  return new Promise(r => pending.set(msg.id, r)).then(m => { if (m.error) throw new Error(method + ": " + JSON.stringify(m.error)); return m.result; });
}
const { targetId } = await send("Target.createTarget", { url: "about:blank" });
const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
const evaluate = async expression => (await send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true }, sessionId)).result.value;
await send("Page.enable", {}, sessionId);
await send("Page.navigate", { url: "file://" + page }, sessionId);
const start = Date.now();
while (!(await evaluate("window.tmmReadyMs !== undefined"))) {
  if (Date.now() - start > 60000) throw new Error("the page did not finish");
  await new Promise(r => setTimeout(r, 20));
}
const ready = await evaluate("window.tmmReadyMs");
while (!(await evaluate("document.readyState === 'complete'"))) await new Promise(r => setTimeout(r, 20));
const parsed = await evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd");
const open = await evaluate("(() => { const t = performance.now(); document.querySelector('#worklist-rows a.open').click(); " +
  "const ms = performance.now() - t; document.getElementById('back').click(); return ms; })()");
const filter = await evaluate("(() => { const s = document.getElementById('f-sev'); s.value = 'high'; s.dispatchEvent(new Event('change')); return window.tmmLastFilterMs; })()");
const shown = await evaluate("document.getElementById('count').textContent");
console.log(JSON.stringify({ ready_ms: Math.round(ready), parsed_ms: Math.round(parsed), filter_ms: Math.round(filter * 10) / 10,
  open_ms: Math.round(open * 10) / 10, shown }));
ws.close();
// The profile goes once chromium has let go of it.
await new Promise(r => { browser.on("exit", r); browser.kill(); });
rmSync(profile, { recursive: true, force: true });
