// redmirror console: one page, three views (#/ overview, #/flow/ID, #/dlq).
// It reads /readyz and /metrics (open) and the admin API (bearer token kept
// in this tab's sessionStorage only). Every path is relative, so the page
// also works behind a reverse proxy that serves it under a prefix.
"use strict";

(function () {
  const TOKEN_KEY = "redmirror.adminToken";
  const REFRESH_MS = 3000;
  const RESYNC_POLL_MS = 500;
  const RESYNC_DEADLINE_MS = 30000;
  const PASSES_KEPT = 10;

  const VERDICTS = {
    in_step: "In step: the staging copy equals production after the field rules.",
    different: "Different: the staging copy does not match production (the marked fields differ).",
    missing: "Missing: production has this flow, staging has no copy yet.",
    extra: "Extra: staging has a copy that should not exist (production lacks the flow, or it is filtered).",
    native: "Native: staging's own flow (no isSyncCopy); the mirror never touches it.",
    filtered: "Filtered: the flow belongs to a filtered organisation and has no copy.",
    absent: "Absent: neither production nor staging has this flow.",
  };

  // ---- state ---------------------------------------------------------------

  const state = {
    adminOff: false,
    timer: null,
    route: null,
    lastMetrics: null, // { at, m }
    passes: [], // reconcile passes seen by this tab, newest first
  };

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return "";
    }
  }
  function setToken(t) {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  }

  // ---- DOM helpers (text only: nothing from the server becomes markup) -----

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const $ = (id) => document.getElementById(id);

  function notice(text) {
    const n = $("notice");
    n.textContent = text || "";
    n.hidden = !text;
  }

  function fmtNumber(x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    return Number(x).toLocaleString("en", { maximumFractionDigits: digits === undefined ? 0 : digits });
  }
  function fmtSeconds(s) {
    if (s === null || s === undefined || !Number.isFinite(s)) return "–";
    if (s < 1) return fmtNumber(s * 1000, s < 0.01 ? 2 : 1) + " ms";
    return fmtNumber(s, 2) + " s";
  }
  function fmtValue(v) {
    if (v === null || v === undefined) return null;
    if (typeof v === "object" && typeof v.base64 === "string") return "base64:" + v.base64;
    return String(v);
  }

  // ---- HTTP ----------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, path) {
      super(message);
      this.status = status;
      this.path = path;
    }
  }

  async function api(path, options) {
    const opts = Object.assign({ method: "GET" }, options || {});
    const headers = { Accept: "application/json" };
    const t = opts.token !== undefined ? opts.token : token();
    if (t) headers.Authorization = "Bearer " + t;
    let r;
    try {
      r = await fetch(path, { method: opts.method, headers, cache: "no-store", credentials: "omit" });
    } catch (e) {
      throw new ApiError(0, "The process does not answer (" + e.message + ").", path);
    }
    const text = await r.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (!r.ok) {
      const why = body && body.error ? body.error : text.trim() || r.statusText;
      throw new ApiError(r.status, why, path);
    }
    return body;
  }

  async function publicText(path) {
    const r = await fetch(path, { cache: "no-store", credentials: "omit" });
    return { status: r.status, text: await r.text() };
  }

  // Admin failures every view handles the same way: a refused token asks for
  // it again, an admin API that is off says so. True when handled.
  function handleAuth(e) {
    if (!(e instanceof ApiError)) return false;
    if (e.status === 401) {
      setToken("");
      showSignin("Wrong token: the process refused it (401 Unauthorized). Enter it again.");
      return true;
    }
    if (e.status === 404 && e.path === "v1/status") {
      setToken("");
      showSignin(adminOffText());
      return true;
    }
    return false;
  }

  // ---- Prometheus text (only what the console reads) -------------------------

  function parseMetrics(text) {
    const samples = [];
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[2] || "")) !== null) {
        labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\(.)/g, "$1");
      }
      samples.push({ name: m[1], labels, value: parseFloat(m[3]) });
    }
    return {
      samples,
      get(name, want) {
        const s = samples.find(
          (x) => x.name === name && Object.entries(want || {}).every(([k, v]) => x.labels[k] === v),
        );
        return s ? s.value : null;
      },
      sum(name, want) {
        let total = null;
        for (const x of samples) {
          if (x.name !== name) continue;
          if (!Object.entries(want || {}).every(([k, v]) => x.labels[k] === v)) continue;
          total = (total || 0) + x.value;
        }
        return total;
      },
      byLabel(name, label) {
        const out = {};
        for (const x of samples) if (x.name === name && label in x.labels) out[x.labels[label]] = x.value;
        return out;
      },
    };
  }

  function captured(m) {
    return m.sum("redmirror_capture_events_total");
  }
  function applied(m) {
    return (m.sum("redmirror_apply_events_total", { outcome: "applied" }) || 0) +
      (m.sum("redmirror_apply_events_total", { outcome: "deleted" }) || 0);
  }

  // ---- sign-in ---------------------------------------------------------------

  function showSignin(message) {
    stopTimer();
    $("signin-view").hidden = false;
    $("view").replaceChildren();
    $("signout").hidden = true;
    const msg = $("signin-message");
    msg.className = "message";
    msg.textContent = message || "";
    const input = $("token");
    input.value = "";
    input.focus();
  }

  async function signIn(ev) {
    ev.preventDefault();
    const t = $("token").value.trim();
    const msg = $("signin-message");
    msg.className = "message info";
    msg.textContent = "Checking the token…";
    $("signin-button").disabled = true;
    try {
      await api("v1/status", { token: t });
      setToken(t);
      state.adminOff = false;
      $("signin-view").hidden = true;
      msg.textContent = "";
      route();
    } catch (e) {
      msg.className = "message";
      if (e.status === 401) {
        msg.textContent = "Wrong token: the process refused it (401 Unauthorized). Check REDMIRROR_ADMIN_TOKEN and enter it again.";
      } else if (e.status === 404) {
        msg.textContent = adminOffText();
      } else {
        msg.textContent = "The admin API did not answer: " + e.message;
      }
      $("token").focus();
      $("token").select();
    } finally {
      $("signin-button").disabled = false;
    }
  }

  function adminOffText() {
    return "The admin API is off on this process: no REDMIRROR_ADMIN_TOKEN is configured, so every /v1/ route answers 404. " +
      "Set REDMIRROR_ADMIN_TOKEN and restart it to use the console; /readyz and /metrics stay open meanwhile.";
  }

  // ---- routing -----------------------------------------------------------------

  function parseRoute() {
    const hash = location.hash || "#/";
    if (hash.startsWith("#/flow/")) return { page: "flow", id: decodeURIComponent(hash.slice(7)) };
    if (hash === "#/flow" || hash === "#/flow/") return { page: "flow", id: "" };
    if (hash === "#/dlq") return { page: "dlq" };
    return { page: "overview" };
  }

  function route() {
    stopTimer();
    notice("");
    const r = parseRoute();
    state.route = r;
    for (const [id, page] of [["nav-overview", "overview"], ["nav-flow", "flow"], ["nav-dlq", "dlq"]]) {
      if (r.page === page) $(id).setAttribute("aria-current", "page");
      else $(id).removeAttribute("aria-current");
    }
    // Served without an admin token, the page carries a plain "admin-off"
    // paragraph: nothing to sign in to.
    if ($("admin-off")) {
      showSignin("");
      $("signin").hidden = true;
      return;
    }
    if (!token()) {
      showSignin("");
      return;
    }
    $("signin-view").hidden = true;
    $("signout").hidden = false;
    if (r.page === "flow") flowPage(r.id);
    else if (r.page === "dlq") dlqPage();
    else overviewPage();
  }

  function stopTimer() {
    if (state.timer) clearTimeout(state.timer);
    state.timer = null;
  }
  function every(fn) {
    const tick = async () => {
      const r = state.route;
      try {
        await fn();
      } catch (e) {
        if (handleAuth(e)) return;
        notice(String(e.message || e));
      }
      if (state.route === r) state.timer = setTimeout(tick, REFRESH_MS);
    };
    tick();
  }
  function refreshed() {
    $("refreshed").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
  }

  // ---- overview ------------------------------------------------------------------

  function overviewPage() {
    const view = $("view");
    view.replaceChildren(
      h("h1", { text: "Overview" }),
      h("div", { class: "grid" },
        h("section", { class: "card", id: "health", "aria-labelledby": "health-h" }, h("h2", { id: "health-h", text: "Health" })),
        h("section", { class: "card", id: "rates", "aria-labelledby": "rates-h" }, h("h2", { id: "rates-h", text: "Rates" })),
        h("section", { class: "card", id: "state", "aria-labelledby": "state-h" }, h("h2", { id: "state-h", text: "Mirror state" })),
        h("section", { class: "card wide chart", id: "latency", "aria-labelledby": "latency-h" },
          h("h2", { id: "latency-h", text: "End-to-end latency (source change → applied), up to the last 30 minutes" })),
        h("section", { class: "card", id: "lag", "aria-labelledby": "lag-h" }, h("h2", { id: "lag-h", text: "Consumer lag" })),
        h("section", { class: "card wide", id: "passes", "aria-labelledby": "passes-h" }, h("h2", { id: "passes-h", text: "Reconcile passes" })),
      ),
    );
    every(refreshOverview);
  }

  async function refreshOverview() {
    const [ready, metricsText, status, series] = await Promise.all([
      publicText("readyz").then((r) => {
        let body = null;
        try {
          body = JSON.parse(r.text);
        } catch (_) {
          body = null;
        }
        return { status: r.status, body };
      }),
      publicText("metrics").then((r) => r.text),
      api("v1/status"),
      api("v1/series").catch((e) => {
        if (e.status === 401) throw e;
        return null;
      }),
    ]);
    if (state.route.page !== "overview") return;
    const m = parseMetrics(metricsText);
    const now = performance.now();
    const prev = state.lastMetrics;
    state.lastMetrics = { at: now, m };
    notice("");
    renderHealth(ready, status);
    renderRates(m, prev, now, series);
    renderState(status, m);
    renderLag(m, status);
    renderChart(series);
    renderPasses(status);
    refreshed();
  }

  function section(id) {
    const s = $(id);
    const title = s.querySelector("h2");
    s.replaceChildren(title);
    return s;
  }

  function renderHealth(ready, status) {
    const s = section("health");
    const body = ready.body || {};
    const components = Object.assign({}, status && status.components, body.components);
    const reasons = body.reasons || {};
    const ok = ready.status === 200;
    s.append(
      h("p", {},
        h("span", { class: ok ? "up" : "down", id: "ready", "data-ready": String(ok), text: ok ? "Ready" : "Not ready" }),
        status ? " · role " : "", status ? h("code", { text: status.role }) : "",
        status && status.version ? " · version " + status.version : ""),
    );
    const rows = Object.keys(components).sort().map((name) =>
      h("tr", {},
        h("th", { scope: "row", text: name }),
        h("td", { class: components[name] ? "up" : "down", text: components[name] ? "up" : "down" }),
        h("td", { text: reasons[name] || "" })));
    if (rows.length) {
      s.append(h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", { text: "Component" }), h("th", { text: "State" }), h("th", { text: "Why" }))),
        h("tbody", {}, rows))));
    }
    const leases = (status && status.lease) || {};
    const names = Object.keys(leases).sort();
    if (names.length) {
      s.append(h("h2", { text: "Lease holders" }), h("dl", { class: "kv", id: "leases" },
        names.flatMap((n) => {
          const l = leases[n] || {};
          const who = l.holder ? l.holder + (l.held_by_me ? " (this process)" : "") : "nobody";
          return [h("dt", { text: n }), h("dd", { class: l.holder ? "" : "warn", text: who })];
        })));
    }
  }

  function renderRates(m, prev, now, series) {
    const s = section("rates");
    let capRate = null;
    let appRate = null;
    if (prev) {
      const dt = (now - prev.at) / 1000;
      if (dt > 0) {
        capRate = Math.max(0, (captured(m) - captured(prev.m)) / dt);
        appRate = Math.max(0, (applied(m) - applied(prev.m)) / dt);
      }
    } else if (series && series.samples && series.samples.length) {
      const last = series.samples[series.samples.length - 1];
      capRate = last.captured_per_second;
      appRate = last.applied_per_second;
    }
    const appliedTotal = m.get("redmirror_apply_events_total", { outcome: "applied" });
    const dlq = m.sum("redmirror_dlq_events_total");
    s.append(h("dl", { class: "kv" },
      h("dt", { text: "Captured" }), h("dd", {}, h("span", { class: "big", id: "captured-rate", text: fmtNumber(capRate, 1) }), " events/s"),
      h("dt", { text: "Applied" }), h("dd", {}, h("span", { class: "big", id: "applied-rate", text: fmtNumber(appRate, 1) }), " events/s"),
      h("dt", { text: "Applied in total" }), h("dd", {}, h("span", { id: "applied-total", "data-value": appliedTotal, text: fmtNumber(appliedTotal) }), " copies written"),
      h("dt", { text: "Captured in total" }), h("dd", { id: "captured-total", text: fmtNumber(captured(m)) }),
      h("dt", { text: "Dead letters" }), h("dd", {},
        h("span", { id: "dlq-count", "data-value": dlq, class: dlq ? "warn" : "", text: fmtNumber(dlq) }), " · ",
        h("a", { href: "#/dlq", text: "see the dead letters" })),
    ));
  }

  function renderState(status, m) {
    const s = section("state");
    const held = status ? status.held : m.get("redmirror_held") === 1;
    const epoch = status && status.source_epoch !== undefined && status.source_epoch !== null
      ? status.source_epoch : m.get("redmirror_source_epoch");
    const verified = status ? status.verified_as_of : null;
    s.append(h("dl", { class: "kv" },
      h("dt", { text: "Verified as of" }),
      h("dd", { id: "verified-as-of", class: verified ? "up" : "warn",
        text: verified ? "staging matched production as of " + verified : "not yet proven" }),
      h("dt", { text: "Hold" }),
      h("dd", { id: "hold", class: held ? "warn" : "" ,
        text: held ? "held at " + (status.held_at || "?") + " since " + (status.held_since || "?") + " (redmirror resume ends it)" : "not held: live" }),
      h("dt", { text: "Source epoch" }), h("dd", { id: "source-epoch", text: fmtNumber(epoch) }),
      h("dt", { text: "Topic" }), h("dd", {}, h("code", { text: (status && status.topic) || "–" })),
      h("dt", { text: "Apply group" }), h("dd", {}, h("code", { text: (status && status.group_id) || "–" })),
    ));
  }

  function renderLag(m, status) {
    const s = section("lag");
    const lag = m.byLabel("redmirror_consumer_lag_messages", "partition");
    if (status && status.lag) for (const [p, v] of Object.entries(status.lag)) if (!(p in lag)) lag[p] = v;
    const parts = Object.keys(lag).sort((a, b) => Number(a) - Number(b));
    const total = parts.reduce((n, p) => n + (Number(lag[p]) || 0), 0);
    s.append(
      h("p", {}, h("span", { class: "big", id: "lag-total", "data-value": total, text: fmtNumber(total) }), " messages behind"),
      h("div", { class: "table-wrap" }, h("table", { id: "lag-table" },
        h("thead", {}, h("tr", {}, h("th", { text: "Partition" }), h("th", { class: "num", text: "Lag (messages)" }))),
        h("tbody", {}, parts.map((p) => h("tr", { "data-partition": p },
          h("td", { text: p }), h("td", { class: "num", "data-value": lag[p], text: fmtNumber(lag[p]) })))))),
    );
  }

  // The SVG namespace, taken from the parser rather than written out.
  const SVG_NS = (() => {
    const d = document.createElement("div");
    d.innerHTML = "<svg></svg>";
    return d.firstChild.namespaceURI;
  })();
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") el.textContent = v;
      else el.setAttribute(k, String(v));
    }
    for (const c of children) el.append(c);
    return el;
  }

  function renderChart(series) {
    const s = section("latency");
    const samples = (series && series.samples) || [];
    const pts = samples.filter((x) => x.p50 !== null || x.p99 !== null);
    if (!series) {
      s.append(h("p", { class: "muted", text: "This process keeps no latency series (GET /v1/series did not answer)." }));
      return;
    }
    const W = 720, H = 220, L = 56, R = 12, T = 12, B = 28;
    const t1 = samples.length ? samples[samples.length - 1].t : Date.now() / 1000;
    // The last 30 minutes, or since the process started when that is
    // shorter (at least 2 minutes), so a young series is not squeezed.
    const span = Math.min(30 * 60, Math.max(120, samples.length ? t1 - samples[0].t + 5 : 0));
    const t0 = t1 - span;
    const maxY = niceCeil(Math.max(0.001, ...pts.flatMap((x) => [x.p50 || 0, x.p99 || 0])));
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - v / maxY) * (H - T - B);
    const path = (key) => {
      let d = "";
      let pen = false;
      for (const p of samples) {
        if (p[key] === null || p[key] === undefined || p.t < t0) {
          pen = false;
          continue;
        }
        d += (pen ? "L" : "M") + x(p.t).toFixed(1) + " " + y(p[key]).toFixed(1) + " ";
        pen = true;
      }
      return d.trim();
    };
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", id: "latency-chart",
      "aria-label": "End-to-end p50 and p99 latency over the last " + Math.round(span / 60) + " minutes" });
    for (let i = 0; i <= 4; i++) {
      const v = (maxY * i) / 4;
      chart.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", text: fmtSeconds(v) }));
    }
    for (const f of [1, 2 / 3, 1 / 3, 0]) {
      const ago = span * f;
      const label = !f ? "now" : ago >= 120 ? "-" + Math.round(ago / 60) + " min" : "-" + Math.round(ago) + " s";
      chart.append(svg("text", { x: x(t1 - ago), y: H - 8, "text-anchor": f === 1 ? "start" : "middle", text: label }));
    }
    const p50 = path("p50");
    const p99 = path("p99");
    if (p50) chart.append(svg("path", { class: "p50", d: p50 }));
    if (p99) chart.append(svg("path", { class: "p99", d: p99 }));
    // A dot per point, so a point between two gaps shows too.
    for (const key of ["p50", "p99"]) {
      for (const p of samples) {
        if (p[key] === null || p[key] === undefined || p.t < t0) continue;
        chart.append(svg("circle", { class: "dot " + key, cx: x(p.t).toFixed(1), cy: y(p[key]).toFixed(1), r: 2.5 }));
      }
    }
    const last = pts.length ? pts[pts.length - 1] : null;
    s.append(
      h("div", { class: "legend" },
        h("span", { class: "k50", text: "p50 " + fmtSeconds(last && last.p50) }),
        h("span", { class: "k99", text: "p99 " + fmtSeconds(last && last.p99) }),
        h("span", { class: "muted", text: "one point per " + (series.interval_seconds || 5) + " s; gaps: nothing applied" })),
      chart,
    );
    if (!pts.length) s.append(h("p", { class: "muted", text: "Nothing applied in the last 30 minutes yet." }));
  }

  // The smallest 1, 2 or 5 times a power of ten at or above v.
  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function renderPasses(status) {
    const s = section("passes");
    const r = status && status.last_reconcile;
    if (r && r.started_at && !state.passes.some((p) => p.started_at === r.started_at)) {
      state.passes.unshift(r);
      state.passes.length = Math.min(state.passes.length, PASSES_KEPT);
    }
    if (!state.passes.length) {
      s.append(h("p", { class: "muted", id: "no-pass", text: "No reconcile pass has finished yet." }));
      return;
    }
    s.append(h("div", { class: "table-wrap" }, h("table", { id: "passes-table" },
      h("thead", {}, h("tr", {},
        ["Started", "Took", "Missing", "Extra", "Different", "Repaired", "Barrier", "Flows (source / staging)"].map((t) => h("th", { text: t })))),
      h("tbody", {}, state.passes.map((p) => {
        const d = p.drift || {};
        const drift = (d.missing || 0) + (d.extra || 0) + (d.different || 0);
        return h("tr", {},
          h("td", {}, p.started_at, p.dry_run ? h("span", { class: "tag", text: "dry run" }) : ""),
          h("td", { class: "num", text: fmtSeconds(p.duration_seconds) }),
          h("td", { class: "num" + (d.missing ? " warn" : ""), text: fmtNumber(d.missing || 0) }),
          h("td", { class: "num" + (d.extra ? " warn" : ""), text: fmtNumber(d.extra || 0) }),
          h("td", { class: "num" + (d.different ? " warn" : ""), text: fmtNumber(d.different || 0) }),
          h("td", { class: "num", text: fmtNumber(p.repaired || 0) }),
          h("td", { class: p.barrier === "reached" ? "" : "warn", text: p.barrier || "–" }),
          h("td", { text: fmtNumber(p.source_flows) + " / " + fmtNumber(p.dest_flows) + (drift ? "" : " · no drift") }));
      })))));
    if (r && r.flows && r.flows.length) {
      s.append(h("p", {}, "Drifted flows in the latest pass: ",
        r.flows.slice(0, 20).flatMap((f, i) => [i ? ", " : "",
          h("a", { href: "#/flow/" + encodeURIComponent(f.flow_id), text: f.flow_id })]),
        r.flows.length > 20 ? " …" : ""));
    }
  }

  // ---- flow page -----------------------------------------------------------------

  function flowPage(id) {
    const view = $("view");
    const input = h("input", { id: "flow-id", name: "flow", value: id, autocomplete: "off", spellcheck: "false", required: true });
    const form = h("form", { id: "flow-search", role: "search", onsubmit: (ev) => {
      ev.preventDefault();
      const v = input.value.trim();
      if (v) location.hash = "#/flow/" + encodeURIComponent(v);
    } },
    h("label", { for: "flow-id", text: "Flow id (a flow id that is not UTF-8: base64:…)" }),
    input, h("button", { type: "submit", text: "Look up" }));
    view.replaceChildren(h("h1", { text: "Flow" }), form, h("div", { id: "flow" }));
    if (!id) {
      input.focus();
      return;
    }
    loadFlow(id).catch(flowError);
  }

  function flowError(e) {
    if (handleAuth(e)) return;
    const box = $("flow");
    if (!box) return;
    const text = e.status === 404
      ? "This process has no flow API (GET /v1/flows answered 404)."
      : "The flow could not be read: " + e.message;
    box.replaceChildren(h("p", { class: "message", text }));
  }

  const flowPath = (id) => "v1/flows/" + encodeURIComponent(id);

  async function loadFlow(id) {
    const [flow, history] = await Promise.all([
      api(flowPath(id)),
      api(flowPath(id) + "/history?limit=20").catch((e) => {
        if (e.status === 401) throw e;
        return { error: e.message };
      }),
    ]);
    if (state.route.page !== "flow" || state.route.id !== id) return;
    renderFlow(id, flow, history);
    refreshed();
  }

  function renderFlow(id, flow, history) {
    const box = $("flow");
    const verdict = flow.verdict || "unknown";
    const differences = new Set(flow.differences || []);
    const src = flow.source;
    const dst = flow.destination;
    const fields = [...new Set([...Object.keys(src || {}), ...Object.keys(dst || {})])].sort();
    const resync = h("button", { type: "button", id: "resync", onclick: () => resyncFlow(id, verdict) }, "Re-sync this flow");
    const rows = fields.map((f) => {
      const differs = differences.has(f);
      const a = src ? fmtValue(src[f]) : null;
      const b = dst ? fmtValue(dst[f]) : null;
      return h("tr", { class: differs ? "differs" : "", "data-field": f, "data-differs": String(differs) },
        h("th", { scope: "row", class: "mono" }, differs ? h("span", { class: "mark", "aria-label": "differs", text: "≠ " }) : "", f,
          f === "isSyncCopy" && a === null ? h("span", { class: "tag", text: "set by the mirror" }) : ""),
        h("td", { class: "mono" }, a === null ? h("span", { class: "muted", text: "(none)" }) : a),
        h("td", { class: "mono" }, b === null ? h("span", { class: "muted", text: "(none)" }) : b));
    });
    box.replaceChildren(
      h("section", { class: "card", "aria-labelledby": "verdict-h" },
        h("h2", { id: "verdict-h" }, "Flow ", h("code", { text: fmtValue(flow.flow_id) || id })),
        h("p", {}, h("span", { id: "verdict", class: "verdict " + verdict, "data-verdict": verdict, text: verdict.replace("_", " ") })),
        h("p", { id: "verdict-words", text: VERDICTS[verdict] || verdict }),
        differences.size ? h("p", { id: "differences" }, "Fields that differ: ", h("code", { text: [...differences].join(", ") })) : "",
        flow.watermark ? h("p", { class: "muted", id: "watermark" }, "Last applied change: source time ",
          h("time", { datetime: flow.watermark.source_time, text: flow.watermark.source_time }),
          ", source epoch " + flow.watermark.source_epoch + ".") : "",
        h("p", {}, resync, " ", h("span", { id: "resync-result", role: "status" }))),
      h("section", { class: "card", "aria-labelledby": "sides-h" },
        h("h2", { id: "sides-h", text: "Production and staging side by side" }),
        src === null && dst === null ? h("p", { class: "muted", text: "Neither side has this flow." }) :
          h("div", { class: "table-wrap" }, h("table", { class: "sides", id: "sides" },
            h("thead", {}, h("tr", {}, h("th", { text: "Field" }),
              h("th", { text: "Production (source, after the field rules)" + (src === null ? ": no flow" : "") }),
              h("th", { text: "Staging (destination)" + (dst === null ? ": no copy" : "") }))),
            h("tbody", {}, rows)))),
      h("section", { class: "card", "aria-labelledby": "history-h" },
        h("h2", { id: "history-h", text: "History on the change topic (newest first)" }),
        renderHistory(history)),
    );
  }

  function renderHistory(history) {
    if (!history || history.error) {
      return h("p", { class: "muted", text: "History unavailable" + (history && history.error ? ": " + history.error : "") + "." });
    }
    const events = history.events || [];
    const bound = [];
    if (typeof history.partition === "number") bound.push("partition " + history.partition);
    if (typeof history.scanned === "number") {
      bound.push(fmtNumber(history.scanned) + " events read" +
        (typeof history.scanned_from_offset === "number" ? " from offset " + fmtNumber(history.scanned_from_offset) : ""));
    }
    if (history.truncated) bound.push("the search stopped at its bound: older events are not shown");
    const list = h("ol", { class: "timeline", id: "history" }, events.map((e) =>
      h("li", { class: e.op === "delete" ? "delete" : "upsert" },
        h("strong", { text: e.op || "?" }), " by ", h("code", { text: e.origin || "?" }), " · ",
        typeof e.source_epoch === "number" ? "epoch " + e.source_epoch + " · " : "",
        h("time", { datetime: e.source_time || "", text: e.source_time || "" }),
        h("div", { class: "muted" }, "partition " + e.partition + ", offset " + e.offset +
          (e.fields && e.fields.length ? " · fields: " + e.fields.map(fmtValue).join(", ") : "")))));
    return h("div", {},
      events.length ? list : h("p", { class: "muted", text: "No events for this flow on the topic." }),
      bound.length ? h("p", { class: history.truncated ? "warn" : "muted", id: "history-bound", text: "Read " + bound.join("; ") + "." }) : "");
  }

  async function resyncFlow(id, before) {
    const button = $("resync");
    const out = $("resync-result");
    button.disabled = true;
    out.className = "";
    out.textContent = "Re-sync requested…";
    try {
      await api("v1/resync/" + encodeURIComponent(id), { method: "POST" });
      const started = Date.now();
      for (;;) {
        await new Promise((r) => setTimeout(r, RESYNC_POLL_MS));
        if (state.route.page !== "flow" || state.route.id !== id) return;
        const flow = await api(flowPath(id));
        if (flow.verdict !== before) {
          await loadFlow(id);
          const o = $("resync-result");
          if (o) {
            o.className = flow.verdict === "in_step" ? "up" : "warn";
            o.textContent = "Verdict changed: " + before.replace("_", " ") + " → " + flow.verdict.replace("_", " ") + ".";
          }
          return;
        }
        if (Date.now() - started > RESYNC_DEADLINE_MS) {
          out.className = "warn";
          out.textContent = "Re-synced, but the verdict is still " + before.replace("_", " ") +
            " after " + RESYNC_DEADLINE_MS / 1000 + " s (is apply held or lagging?).";
          button.disabled = false;
          return;
        }
      }
    } catch (e) {
      if (handleAuth(e)) return;
      out.className = "down";
      out.textContent = "Re-sync failed: " + e.message;
      button.disabled = false;
    }
  }

  // ---- dead letters ----------------------------------------------------------------

  function dlqPage() {
    $("view").replaceChildren(
      h("h1", { text: "Dead letters" }),
      h("p", { class: "muted", text: "Events apply could never write, newest first. Fix the cause (for example a staging key of the wrong type), then re-drive the flow: its dead letters go back through the change topic." }),
      h("p", { id: "dlq-result", role: "status" }),
      h("div", { id: "dlq" }),
    );
    every(refreshDlq);
  }

  function dlqEntries(body) {
    if (Array.isArray(body)) return body;
    for (const k of ["dead_letters", "entries", "events", "letters", "items"]) {
      if (body && Array.isArray(body[k])) return body[k];
    }
    return [];
  }

  async function refreshDlq() {
    let body;
    try {
      body = await api("v1/dlq?limit=100");
    } catch (e) {
      if (e.status === 404) {
        $("dlq").replaceChildren(h("p", { class: "message", text: "This process has no dead-letter API (GET /v1/dlq answered 404)." }));
        return;
      }
      throw e;
    }
    if (state.route.page !== "dlq") return;
    const entries = dlqEntries(body);
    const box = $("dlq");
    if (!entries.length) {
      box.replaceChildren(h("p", { id: "dlq-empty", text: "No dead letters." }));
      refreshed();
      return;
    }
    const flows = new Set();
    box.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "dlq-table" },
      h("thead", {}, h("tr", {}, ["Flow", "Reason", "When", "Topic / partition / offset", ""].map((t) => h("th", { text: t })))),
      h("tbody", {}, entries.map((d) => {
        const flow = fmtValue(d.flow_id) || "";
        const first = !flows.has(flow);
        flows.add(flow);
        return h("tr", { "data-flow": flow },
          h("td", {}, flow ? h("a", { href: "#/flow/" + encodeURIComponent(flow), class: "mono", text: flow }) : h("span", { class: "muted", text: "(no key)" })),
          h("td", {}, d.reason_code ? h("code", { text: d.reason_code }) : "", d.reason_code && d.reason ? " " : "", d.reason || ""),
          h("td", { text: d.dead_lettered_at || d.time || d.timestamp || d.source_time || "" }),
          h("td", { class: "mono", text: [d.topic, d.partition, d.offset].filter((x) => x !== undefined && x !== null).join(" / ") }),
          h("td", {}, flow && first ? h("button", { type: "button", class: "secondary redrive", "data-flow": flow,
            "aria-label": "Re-drive flow " + flow, onclick: (ev) => redrive(flow, ev.currentTarget) }, "Re-drive") : ""));
      })))));
    refreshed();
  }

  async function redrive(flow, button) {
    const out = $("dlq-result");
    button.disabled = true;
    out.className = "";
    out.textContent = "Re-driving " + flow + "…";
    try {
      const body = await api("v1/dlq/redrive?flow=" + encodeURIComponent(flow), { method: "POST" });
      const n = body && (body.redriven ?? body.redrove ?? body.count);
      out.className = "up";
      out.textContent = "Re-drove " + (n !== undefined && n !== null ? n + " dead letter(s) of " : "") + flow + ".";
      out.setAttribute("data-flow", flow);
    } catch (e) {
      if (handleAuth(e)) return;
      out.className = "down";
      out.textContent = "Re-drive of " + flow + " failed: " + e.message;
      button.disabled = false;
    }
  }

  // ---- start ---------------------------------------------------------------------------

  window.addEventListener("hashchange", route);
  document.addEventListener("DOMContentLoaded", () => {
    $("signin").addEventListener("submit", signIn);
    $("signout").addEventListener("click", () => {
      setToken("");
      showSignin("Enter the admin token.");
    });
    route();
  });
})();
