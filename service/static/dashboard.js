// The dashboard's behaviour: the admin key, promote / rollback, the metric chart and the live
// traffic chart. Plain browser JavaScript and uPlot (vendored), no build step.
"use strict";

const KEY_STORAGE = "recsys-api-key";
const POLL_MS = 2000;
const LIVE_POINTS = 150;

// --- the admin key: kept in this tab's session storage only ------------------------------------

function apiKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

function showKeyState() {
  const set = apiKey() !== "";
  document.getElementById("key-status").textContent = set ? "key set for this tab" : "";
  document.getElementById("forget-key").hidden = !set;
  document.getElementById("api-key").value = "";
  document.getElementById("api-key").placeholder = set ? "key set (enter to replace)" : "X-API-Key for promote / rollback";
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = document.getElementById("api-key").value.trim();
  if (value) sessionStorage.setItem(KEY_STORAGE, value);
  showKeyState();
});
document.getElementById("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  showKeyState();
});
showKeyState();

// --- promote and roll back -------------------------------------------------------------------

function say(text, kind) {
  const banner = document.getElementById("admin-message");
  banner.textContent = text;
  banner.className = "banner " + (kind || "");
  banner.hidden = false;
}

async function admin(path, body) {
  if (!apiKey()) {
    say("Enter the admin key (RECSYS_API_KEY) at the top right first.", "error");
    document.getElementById("api-key").focus();
    return null;
  }
  const response = await fetch(path, {
    method: "POST",
    headers: { "X-API-Key": apiKey(), "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let payload = {};
  try { payload = await response.json(); } catch (error) { payload = { detail: response.statusText }; }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY_STORAGE);
    showKeyState();
  }
  return { status: response.status, payload };
}

function done(result, verb) {
  const change = result.payload;
  let text = `${change.production.version} is production now (${verb}; before: ${change.previous || "none"}).`;
  if (change.detail) text += " " + change.detail;
  say(text, change.detail ? "error" : "ok");
  setTimeout(() => window.location.reload(), 1200);
}

async function promote(version) {
  let result = await admin(`admin/versions/${encodeURIComponent(version)}/promote`, { force: false });
  if (result === null) return;
  if (result.status === 409 && confirm(`${result.payload.detail}\n\nPromote ${version} anyway?`)) {
    result = await admin(`admin/versions/${encodeURIComponent(version)}/promote`, { force: true });
  }
  if (result.status === 200) done(result, "promoted");
  else say(`Promote failed (${result.status}): ${result.payload.detail}`, "error");
}

document.querySelectorAll("button.promote").forEach((button) => {
  button.addEventListener("click", () => promote(button.dataset.version));
});
document.getElementById("rollback").addEventListener("click", async () => {
  if (!confirm("Roll production back to the version promoted before it? The current one is archived.")) return;
  const result = await admin("admin/rollback");
  if (result === null) return;
  if (result.status === 200) done(result, "rolled back");
  else say(`Rollback failed (${result.status}): ${result.payload.detail}`, "error");
});

// --- metrics of the versions over time ------------------------------------------------------

const points = JSON.parse(document.getElementById("version-points").textContent);
const chartWidth = (element) => Math.max(320, element.clientWidth || 900);

function metricNames() {
  const names = new Set();
  points.forEach((point) => Object.keys(point.metrics).forEach((name) => {
    if (!name.startsWith("baseline_")) names.add(name);
  }));
  const ranking = [...names].filter((name) => name.includes("@")).sort();
  return ranking.concat([...names].filter((name) => !name.includes("@")).sort());
}

let metricChart = null;
function drawMetric(name) {
  const element = document.getElementById("metric-chart");
  if (metricChart) { metricChart.destroy(); metricChart = null; }
  const shown = points.filter((point) => name in point.metrics);
  document.getElementById("metric-empty").hidden = shown.length > 0;
  if (!shown.length) return;
  // One step per version, in the order they were trained, labelled with when: versions trained
  // minutes apart stay as readable as versions trained weeks apart.
  const x = shown.map((point, i) => i);
  const value = shown.map((point) => point.metrics[name]);
  const baseline = shown.map((point) => point.metrics["baseline_" + name] ?? null);
  const production = shown.map((point) => (point.status === "production" ? point.metrics[name] : null));
  const label = (u, i) => {
    if (i == null || !shown[i]) return "";
    const note = shown[i].note ? `; ${shown[i].note}` : "";
    return `${shown[i].version} (${shown[i].status}${note})`;
  };
  const when = (i) => {
    const date = new Date(shown[i].created * 1000);
    return date.toISOString().slice(5, 16).replace("T", " ");
  };
  metricChart = new uPlot({
    width: chartWidth(element), height: 240,
    scales: { x: { time: false, range: () => [-0.5, shown.length - 0.5] } },
    series: [
      { label: "Version", value: (u, v, s, i) => label(u, i) },
      { label: name, stroke: "#2f6fde", width: 2, points: { show: true, size: 9, fill: "#2f6fde" } },
      { label: "baseline", stroke: "#9aa3b2", dash: [6, 4], width: 1.5, points: { show: true, size: 5 } },
      { label: "production", stroke: "#1f8a4c", width: 0, points: { show: true, size: 15, width: 3, fill: "#fff", stroke: "#1f8a4c" } },
    ],
    axes: [
      { incrs: [1, 2, 5, 10, 20, 50, 100], values: (u, splits) => splits.map((i) => (Number.isInteger(i) && shown[i] ? when(i) : "")) },
      { label: name },
    ],
  }, [x, value, baseline, production], element);
}

const select = document.getElementById("metric-select");
const names = metricNames();
names.forEach((name) => select.add(new Option(name, name)));
if (names.length) {
  select.value = names.includes("ndcg@10") ? "ndcg@10" : names[0];
  drawMetric(select.value);
} else {
  document.getElementById("metric-empty").hidden = false;
}
select.addEventListener("change", () => drawMetric(select.value));

// --- live request rate and latency ----------------------------------------------------------

const live = { x: [], rate: [], mean: [], p95: [], previous: null };

function quantile(bounds, counts, total, q) {
  // Linear interpolation inside the histogram bucket that holds the q-th request.
  if (total <= 0) return null;
  const rank = q * total;
  let below = 0, lower = 0;
  for (let i = 0; i < bounds.length; i++) {
    if (counts[i] >= rank) {
      const inBucket = counts[i] - below;
      return inBucket > 0 ? lower + (bounds[i] - lower) * ((rank - below) / inBucket) : bounds[i];
    }
    below = counts[i];
    lower = bounds[i];
  }
  return bounds.length ? bounds[bounds.length - 1] : null;
}

function summed(endpoints, bounds) {
  const total = { requests: 0, sum: 0, buckets: bounds.map(() => 0) };
  endpoints.forEach((endpoint) => {
    total.requests += endpoint.requests;
    total.sum += endpoint.latency_sum;
    endpoint.buckets.forEach((count, i) => { total.buckets[i] += count; });
  });
  return total;
}

const ms = (seconds) => (seconds == null ? "–" : seconds * 1000 < 10 ? (seconds * 1000).toFixed(2) + " ms" : (seconds * 1000).toFixed(1) + " ms");

function renderEndpoints(sample) {
  const body = document.querySelector("#endpoints-table tbody");
  body.replaceChildren();
  [...sample.endpoints].sort((a, b) => b.requests - a.requests).forEach((endpoint) => {
    const row = body.insertRow();
    row.dataset.endpoint = endpoint.endpoint;
    if (endpoint.own) row.className = "muted";
    const count = endpoint.buckets.length ? endpoint.buckets[endpoint.buckets.length - 1] : endpoint.requests;
    const cells = [
      endpoint.endpoint,
      endpoint.requests.toLocaleString(),
      endpoint.client_errors.toLocaleString(),
      endpoint.server_errors.toLocaleString(),
      ms(endpoint.requests ? endpoint.latency_sum / endpoint.requests : null),
      ms(quantile(sample.bounds, endpoint.buckets, count, 0.95)),
    ];
    cells.forEach((text, i) => {
      const cell = row.insertCell();
      cell.textContent = text;
      if (i > 0) cell.className = "num";
      else cell.classList.add("mono");
    });
  });
}

let trafficChart = null;
function drawTraffic() {
  const element = document.getElementById("traffic-chart");
  const data = [live.x, live.rate, live.mean, live.p95];
  if (trafficChart) { trafficChart.setData(data); return; }
  element.replaceChildren();
  trafficChart = new uPlot({
    width: chartWidth(element), height: 220,
    // The last LIVE_POINTS samples (at least 10 s wide).
    scales: { x: { time: true, range: (u, min, max) => (max - min < 10 ? [max - 10, max] : [min, max]) }, rate: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] }, ms: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    series: [
      {},
      { label: "requests/s", scale: "rate", stroke: "#2f6fde", width: 2, fill: "rgba(47,111,222,.08)", points: { show: true, size: 4 } },
      { label: "mean ms", scale: "ms", stroke: "#1f8a4c", width: 1.5, points: { show: true, size: 4 } },
      { label: "p95 ms", scale: "ms", stroke: "#b26a00", width: 1.5, dash: [5, 3], points: { show: true, size: 4 } },
    ],
    axes: [{ space: 70, incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300] }, { scale: "rate", label: "requests/s" }, { scale: "ms", side: 1, label: "ms", grid: { show: false } }],
  }, data, element);
}

async function poll() {
  let sample;
  try {
    const response = await fetch("dashboard/live", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(response.statusText);
    sample = await response.json();
  } catch (error) {
    document.getElementById("live-updated").textContent = "service not answering: " + error.message;
    return;
  }
  renderEndpoints(sample);
  const api = summed(sample.endpoints.filter((endpoint) => !endpoint.own), sample.bounds);
  const previous = live.previous;
  live.previous = { time: sample.time, api };
  document.getElementById("live-updated").textContent = "updated " + new Date(sample.time * 1000).toLocaleTimeString();
  if (!previous) return;
  const seconds = Math.max(sample.time - previous.time, 1e-3);
  const count = api.requests - previous.api.requests;
  const rate = count / seconds;
  const mean = count > 0 ? (api.sum - previous.api.sum) / count : null;
  const window = api.buckets.map((value, i) => value - previous.api.buckets[i]);
  const windowCount = window.length ? window[window.length - 1] : count;
  const p95 = quantile(sample.bounds, window, windowCount, 0.95);
  live.x.push(sample.time);
  live.rate.push(rate);
  live.mean.push(mean == null ? null : mean * 1000);
  live.p95.push(p95 == null ? null : p95 * 1000);
  if (live.x.length > LIVE_POINTS) ["x", "rate", "mean", "p95"].forEach((key) => live[key].shift());
  document.getElementById("live-rate").textContent = rate.toFixed(rate < 10 ? 2 : 0);
  document.getElementById("live-p95").textContent = ms(p95);
  document.getElementById("live-mean").textContent = "mean " + ms(mean);
  drawTraffic();
}

poll();
setInterval(poll, POLL_MS);
