// The operator dashboard: plain JavaScript over /coordination/stream, no library, no build.
//
// Everything shown comes from the live stream; when it stops being live (the coordinator
// or Temporal cannot be read, or the stream itself broke) the page says so and greys the
// numbers instead of passing old ones off as current. Actions use the browser session:
// each sends a JSON body and the session's CSRF token, asks first, and reports the answer.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("config").textContent);
  const SAMPLE_MS = 2000;
  const RING_SIZE = 150; // 5 minutes of 2 s samples, per service
  const RECENT_ROWS = 12;
  const DETAIL_CACHE = 500;
  const DETAIL_CONCURRENCY = 2;
  const DECIDED_HIDE_MS = 30000; // visibility lags: hide a decided order this long

  let csrf = null;
  let source = null;
  let retryMs = 1000;
  let lastState = null;
  let lastLiveAt = null;
  let live = false;
  let sessionOver = false;
  const rings = Object.fromEntries(config.services.map((s) => [s, []]));
  const decided = new Map(); // order_id -> time decided
  const details = new Map(); // order_id -> GET /orders/{id} body, or "pending" / "error"
  const detailQueue = [];
  let detailsInFlight = 0;

  // --- small DOM helpers (textContent only: server strings are never parsed as HTML) -------

  const $ = (selector, root = document) => root.querySelector(selector);

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function fill(tbody, rows, emptyText, columns) {
    tbody.replaceChildren(
      ...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText))]),
    );
  }

  const fmt = {
    num: (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en")),
    rate: (n) => (n === null || n === undefined ? "–" : Number(n).toFixed(2)),
    pct: (n) => (n === null || n === undefined ? "–" : `${(100 * n).toFixed(1)} %`),
    ms: (n) => (n === null || n === undefined ? "–" : `${Math.round(n)} ms`),
    time: (iso) => (iso ? new Date(iso).toLocaleTimeString("en-GB") : "–"),
    ago: (iso) => {
      if (!iso) return "–";
      const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
      return s < 90 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
    },
  };

  // --- links ------------------------------------------------------------------------------

  function webUiUrl(orderId) {
    const ns = encodeURIComponent(config.namespace);
    return `${config.temporal_ui_url}/namespaces/${ns}/workflows/${encodeURIComponent(orderId)}`;
  }

  function orderCell(orderId) {
    return el(
      "td",
      { title: `${orderId} in the Temporal Web UI` },
      el("a", { class: "id order-link", href: webUiUrl(orderId), target: "_blank", rel: "noopener" }, orderId),
    );
  }

  function traceCell(orderId) {
    const cell = el("td", { class: "trace id", dataset: { order: orderId } });
    renderTrace(cell, orderId);
    return cell;
  }

  function renderTrace(cell, orderId) {
    const found = details.get(orderId);
    if (found === undefined) {
      cell.replaceChildren("…");
      wantDetails(orderId);
    } else if (found === "pending") {
      cell.replaceChildren("…");
    } else if (found === "error" || !found.trace_id) {
      cell.replaceChildren(el("span", { class: "muted", title: "no trace ID recorded for this order" }, "—"));
    } else if (config.trace_url_template) {
      const href = config.trace_url_template.replace("{trace_id}", encodeURIComponent(found.trace_id));
      cell.replaceChildren(el("a", { href, target: "_blank", rel: "noopener", title: found.trace_id }, found.trace_id));
    } else {
      cell.replaceChildren(el("span", { title: "trace ID" }, found.trace_id));
    }
  }

  // Trace IDs come from GET /orders/{id}: fetched for shown rows only, a few at a time,
  // and cached (an order's trace never changes), so a busy system costs few requests.
  function wantDetails(orderId) {
    if (details.has(orderId)) return;
    details.set(orderId, "pending");
    detailQueue.push(orderId);
    pumpDetails();
  }

  function pumpDetails() {
    while (detailsInFlight < DETAIL_CONCURRENCY && detailQueue.length) {
      const orderId = detailQueue.shift();
      if (!document.querySelector(`td.trace[data-order="${CSS.escape(orderId)}"]`)) {
        details.delete(orderId); // scrolled off before its turn
        continue;
      }
      detailsInFlight += 1;
      call("GET", `/orders/${encodeURIComponent(orderId)}`)
        .then((answer) => details.set(orderId, answer.ok ? answer.data : "error"))
        .catch(() => details.set(orderId, "error"))
        .finally(() => {
          detailsInFlight -= 1;
          while (details.size > DETAIL_CACHE) details.delete(details.keys().next().value);
          for (const cell of document.querySelectorAll(`td.trace[data-order="${CSS.escape(orderId)}"]`)) {
            renderTrace(cell, orderId);
          }
          pumpDetails();
        });
    }
  }

  // --- HTTP -------------------------------------------------------------------------------

  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      if (csrf) headers["X-CSRF-Token"] = csrf;
      init.body = JSON.stringify(body ?? {});
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (response.status === 401) endSession();
    return { ok: response.ok, status: response.status, data };
  }

  // True with a live session; false when the API did not answer (a 401 ends the session).
  async function loadSession() {
    try {
      const answer = await call("GET", "/session");
      if (answer.ok) csrf = answer.data.csrf_token;
      return answer.ok;
    } catch {
      return false;
    }
  }

  function endSession() {
    if (sessionOver) return;
    sessionOver = true;
    if (source) source.close();
    markStale("Your session has ended.", { href: "/login?next=/dashboard", text: "Log in again" });
    setBadge("expired", "logged out");
  }

  // --- connection state -------------------------------------------------------------------

  function setBadge(state, text) {
    const badge = $("#conn");
    badge.dataset.state = state;
    badge.textContent = text;
    document.body.dataset.conn = state === "live" ? "live" : state === "connecting" && !lastState ? "connecting" : "stale";
  }

  function markLive() {
    live = true;
    lastLiveAt = new Date();
    $("#banner").hidden = true;
    setBadge("live", "live");
  }

  function markStale(reason, link) {
    live = false;
    const banner = $("#banner");
    const since = lastLiveAt ? ` The numbers below were last live at ${lastLiveAt.toLocaleTimeString("en-GB")} and are stale.` : " No live numbers yet.";
    banner.replaceChildren(`Not live: ${reason}${since}`);
    if (link) banner.append(" ", el("a", { href: link.href }, link.text));
    banner.hidden = false;
    setBadge("stale", "stale");
  }

  function connect() {
    if (sessionOver) return;
    if (source) source.close();
    if (!lastState) setBadge("connecting", "connecting…");
    source = new EventSource("/coordination/stream");
    source.addEventListener("state", (event) => {
      retryMs = 1000;
      markLive();
      render(JSON.parse(event.data));
    });
    source.addEventListener("unavailable", (event) => {
      let detail = "the coordinator cannot be read";
      try {
        detail = JSON.parse(event.data).detail || detail;
      } catch {
        /* keep the default */
      }
      markStale(`the coordinator or Temporal is unavailable (${detail}).`);
    });
    // The server ends each stream after its lifetime: open the next one at once.
    source.addEventListener("reconnect", () => connect());
    source.onerror = () => {
      markStale("the live stream from the API was lost; reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        // A refused stream (401, 429, 5xx) is not retried by EventSource itself.
        const wait = retryMs;
        retryMs = Math.min(retryMs * 2, 30000);
        setTimeout(async () => {
          await loadSession(); // a 401 here ends the session instead of retrying forever
          connect();
        }, wait);
      }
    };
  }

  // --- rendering the state ----------------------------------------------------------------

  function render(state) {
    lastState = state;
    $("#as-of").textContent = `revision ${state.revision} · as of ${fmt.time(state.as_of)}`;
    const sagas = state.sagas;
    $("#in-flight").textContent = fmt.num(sagas.in_flight);
    $("#compensating").textContent = fmt.num(sagas.compensating);
    const tp = state.throughput;
    $("#finished-per-s").textContent = fmt.rate(tp.finished_per_s);
    $("#started-window").textContent = fmt.num(tp.started);
    $("#finished-window").textContent = fmt.num(tp.finished);
    $("#started-label").textContent = `started, last ${tp.window_s} s`;
    $("#finished-label").textContent = `finished, last ${tp.window_s} s`;
    const intake = state.intake;
    const intakeState = $("#intake-state");
    intakeState.textContent = intake.paused ? "paused" : "open";
    intakeState.title = intake.reason || "";
    intakeState.dataset.paused = String(intake.paused);
    $("#pause-intake").disabled = intake.paused;
    $("#resume-intake").disabled = !intake.paused;
    renderCounts($("#by-type"), sagas.by_type || {}, "no sagas in flight");
    renderCounts($("#by-status"), sagas.by_status, "no sagas in flight");
    renderCounts($("#by-step"), sagas.by_step, "no sagas in flight");
    renderCounts($("#finished-total"), sagas.finished_total, "none yet");
    for (const [name, view] of Object.entries(state.services)) renderService(name, view);
    renderDeadLetters(state.dead_letters);
    renderRecent(state.recent_terminals);
    renderWorkers(state.workers);
  }

  function renderCounts(tbody, counts, emptyText) {
    const entries = Object.entries(counts).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const top = Math.max(1, ...entries.map(([, n]) => n));
    const rows = entries.map(([key, n]) => {
      const bar = el("div", { class: "bar" });
      bar.style.width = `${(100 * n) / top}%`; // CSSOM, which the page's CSP allows
      return el(
        "tr",
        { dataset: { key } },
        el("th", { scope: "row", class: `status-${key}` }, key),
        el("td", { class: "bar-cell" }, bar),
        el("td", { class: "n" }, fmt.num(n)),
      );
    });
    fill(tbody, rows, emptyText, 3);
  }

  function renderService(name, view) {
    const card = document.querySelector(`.service[data-service="${CSS.escape(name)}"]`);
    if (!card) return; // a service this page was not rendered with
    const circuit = view.circuit;
    const badge = $(".circuit", card);
    badge.dataset.state = circuit.state;
    badge.textContent = circuit.state.replace("_", "-") + (circuit.manual ? " (by hand)" : "");
    let reason = circuit.reason || "";
    if (circuit.state === "open" && circuit.retry_at) reason += ` · probe at ${fmt.time(circuit.retry_at)}`;
    $(".circuit-reason", card).textContent = reason;
    $('[data-metric="calls"]', card).textContent = fmt.rate(view.calls_per_s);
    $('[data-metric="errors"]', card).textContent = fmt.pct(view.error_ratio);
    $('[data-metric="p95"]', card).textContent = fmt.ms(view.p95_ms);
    $('[data-metric="in_flight"]', card).textContent = fmt.num(view.in_flight);
    $(".last-error", card).textContent = view.last_error ? `last error: ${view.last_error}` : "";
    $('[data-action="trip"]', card).disabled = circuit.state === "open";
    $('[data-action="reset"]', card).disabled = circuit.state === "closed";
  }

  function renderDeadLetters(letters) {
    $("#dead-count").textContent = letters.length ? `(${letters.length})` : "";
    const rows = letters.map((letter) =>
      el(
        "tr",
        { dataset: { order: letter.order_id, status: letter.status } },
        orderCell(letter.order_id),
        el("td", { class: "wrap" }, letter.compensation),
        el("td", { class: `status-${letter.status === "failed" ? "FAILED" : "COMPENSATING"}` }, letter.status),
        el("td", {}, `${letter.rounds} (${letter.attempts})`),
        el("td", { class: "small wrap" }, letter.error || ""),
        traceCell(letter.order_id),
        el(
          "td",
          {},
          letter.status === "failed"
            ? el("button", { type: "button", class: "retry", onclick: () => retryCompensations(letter.order_id) }, "Retry")
            : el("span", { class: "muted small" }, "retrying by itself"),
        ),
      ),
    );
    fill($("#dead-letters"), rows, "none: every compensation went through", 7);
  }

  function renderRecent(terminals) {
    const rows = terminals
      .slice(-RECENT_ROWS)
      .reverse()
      .map((record) =>
        el(
          "tr",
          { dataset: { order: record.order_id, status: record.status } },
          orderCell(record.order_id),
          el("td", { class: `status-${record.status}` }, record.status),
          el("td", {}, fmt.time(record.finished_at)),
          traceCell(record.order_id),
        ),
      );
    fill($("#recent"), rows, "no saga has finished yet", 4);
  }

  function renderWorkers(workers) {
    const rows = workers
      .slice()
      .sort((a, b) => a.worker.localeCompare(b.worker))
      .map((w) =>
        el(
          "tr",
          {},
          el("td", { class: "id" }, w.worker),
          el("td", { class: "age", dataset: { at: w.last_report_at } }, fmt.ago(w.last_report_at)),
          el("td", {}, fmt.num(w.reports)),
        ),
      );
    fill($("#workers"), rows, "no worker has reported yet", 3);
  }

  // --- per-service charts: a client-side ring buffer, drawn on <canvas> ----------------------

  // Sampled on a clock, not per event: an idle system sends no events, yet its time moves.
  function sample() {
    const now = Date.now();
    for (const service of config.services) {
      const view = live && lastState ? lastState.services[service] : null;
      const point = view
        ? { t: now, calls: view.calls_per_s, errors: view.error_ratio, p95: view.p95_ms }
        : { t: now, gap: true }; // not live: a hole in the line, never a made-up value
      const ring = rings[service];
      ring.push(point);
      if (ring.length > RING_SIZE) ring.shift();
    }
    drawCharts();
  }

  const SERIES = {
    calls: { color: "#2d5bd7", floor: 0.1, label: (v) => `${v.toFixed(2)}/s` },
    errors: { color: "#c0392b", floor: 0.05, label: (v) => `${(100 * v).toFixed(1)} % err` },
    p95: { color: "#7d3cc8", floor: 10, label: (v) => `p95 ${Math.round(v)} ms` },
  };

  function drawCharts() {
    for (const card of document.querySelectorAll(".service")) {
      const ring = rings[card.dataset.service] || [];
      for (const canvas of card.querySelectorAll("canvas.chart")) drawChart(canvas, ring, canvas.dataset.series);
    }
  }

  function drawChart(canvas, ring, key) {
    const spec = SERIES[key];
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 280;
    const height = canvas.clientHeight || 44;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.fillStyle = "#f7f8fa";
    ctx.fillRect(0, 0, width, height);
    const values = ring.filter((p) => !p.gap && p[key] !== null).map((p) => p[key]);
    const top = Math.max(spec.floor, ...values);
    const end = ring.length ? ring[ring.length - 1].t : Date.now();
    const span = RING_SIZE * SAMPLE_MS;
    const x = (t) => width - ((end - t) / span) * width;
    const y = (v) => height - 3 - (v / top) * (height - 16);
    // One filled run per stretch of live samples: a gap stays a gap.
    const runs = [];
    let run = [];
    for (const point of ring) {
      const v = point.gap ? null : point[key];
      if (v === null || v === undefined) {
        if (run.length) runs.push(run);
        run = [];
      } else {
        run.push([x(point.t), y(v)]);
      }
    }
    if (run.length) runs.push(run);
    ctx.strokeStyle = spec.color;
    ctx.fillStyle = `${spec.color}22`;
    ctx.lineWidth = 1.5;
    for (const points of runs) {
      if (points.length === 1) points.unshift([points[0][0] - 2, points[0][1]]);
      ctx.beginPath();
      ctx.moveTo(points[0][0], height - 3);
      for (const [px, py] of points) ctx.lineTo(px, py);
      ctx.lineTo(points[points.length - 1][0], height - 3);
      ctx.closePath();
      ctx.fill();
      ctx.beginPath();
      points.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
      ctx.stroke();
    }
    ctx.fillStyle = "#5b6475";
    ctx.font = "10px system-ui, sans-serif";
    const last = ring.length ? ring[ring.length - 1] : null;
    const current = last && !last.gap && last[key] !== null ? spec.label(last[key]) : key === "p95" ? "p95 –" : "–";
    ctx.fillText(current, 4, 11);
    const scale = `max ${spec.label(top)}`;
    ctx.fillText(scale, width - ctx.measureText(scale).width - 4, 11);
  }

  // --- held orders (visibility, polled) ------------------------------------------------------

  async function loadHeld() {
    const note = $("#held-note");
    try {
      const answer = await call("GET", "/orders?status=AWAITING_APPROVAL&page_size=50");
      if (!answer.ok) throw new Error(answer.data?.detail || `HTTP ${answer.status}`);
      const now = Date.now();
      for (const [id, at] of decided) if (now - at > DECIDED_HIDE_MS) decided.delete(id);
      const orders = answer.data.orders.filter((o) => !decided.has(o.order_id));
      note.textContent = `(${orders.length}) · listed ${new Date().toLocaleTimeString("en-GB")}`;
      renderHeld(orders);
    } catch (err) {
      note.textContent = `could not list held orders: ${err.message}; the list below is stale`;
    }
  }

  function renderHeld(orders) {
    const rows = orders.map((order) =>
      el(
        "tr",
        { dataset: { order: order.order_id } },
        orderCell(order.order_id),
        el("td", {}, order.customer_id || ""),
        el("td", {}, fmt.time(order.started_at)),
        traceCell(order.order_id),
        el(
          "td",
          { class: "actions" },
          el("button", { type: "button", class: "approve", onclick: () => decide(order.order_id, true) }, "Approve"),
          el("button", { type: "button", class: "reject danger", onclick: () => decide(order.order_id, false) }, "Reject"),
        ),
      ),
    );
    fill($("#held"), rows, "no order is waiting for approval", 5);
  }

  // --- actions ----------------------------------------------------------------------------

  function report(text, ok) {
    const item = el("li", { class: ok ? "ok" : "failed" }, `${new Date().toLocaleTimeString("en-GB")} ${text}`);
    $("#results").prepend(item);
    const toast = $("#toast");
    toast.textContent = text;
    toast.className = ok ? "toast" : "toast failed";
    toast.hidden = false;
    clearTimeout(report.timer);
    report.timer = setTimeout(() => (toast.hidden = true), 6000);
  }

  // Ask, send, and say how it went; `outcome` words a success from the answer's body.
  async function act(question, what, method, path, body, outcome = () => "done") {
    if (!window.confirm(question)) return null;
    try {
      const answer = await call(method, path, body);
      if (answer.ok) report(`${what}: ${outcome(answer.data)}`, true);
      else report(`${what}: refused (${answer.status}) ${answer.data?.detail ?? ""}`, false);
      return answer.ok ? answer.data : null;
    } catch (err) {
      report(`${what}: no answer from the API (${err.message})`, false);
      return null;
    }
  }

  const reason = () => `from the dashboard by ${config.operator}`;

  async function operate(action, service) {
    const words = {
      trip: [`Trip the ${service} circuit? Its calls will fail fast until you reset it.`, `trip ${service}`],
      reset: [`Reset the ${service} circuit to closed?`, `reset ${service}`],
      pause_intake: ["Pause intake? New orders will be refused with 503 until you resume.", "pause intake"],
      resume_intake: ["Resume intake?", "resume intake"],
    }[action];
    const body = { action, reason: reason() };
    if (service) body.service = service;
    const outcome = (state) =>
      service ? `done, circuit now ${state.services[service].circuit.state}` : `done, intake ${state.intake.paused ? "paused" : "open"}`;
    const state = await act(words[0], words[1], "POST", "/coordination/operate", body, outcome);
    if (state) {
      // The answer is the coordinator's state just after the action: as live as it gets.
      markLive();
      render(state);
    }
  }

  async function decide(orderId, approve) {
    const verb = approve ? "approve" : "reject";
    const done = await act(
      `${approve ? "Approve" : "Reject"} order ${orderId}?`,
      `${verb} ${orderId}`,
      "POST",
      `/orders/${encodeURIComponent(orderId)}/${verb}`,
      { note: reason() },
      (order) => `done, order now ${order.status}`,
    );
    if (done) {
      decided.set(orderId, Date.now());
      const row = document.querySelector(`#held tr[data-order="${CSS.escape(orderId)}"]`);
      if (row) row.remove();
      loadHeld();
    }
  }

  async function retryCompensations(sagaId) {
    // A dead letter names its saga: an order's compensations, or what a return's failed.
    const isReturn = sagaId.startsWith("return-");
    // Both sagas' `/retry` runs again whatever failed for good: a step past the pivot or
    // failed compensations.
    const path = `/${isReturn ? "returns" : "orders"}/${encodeURIComponent(sagaId)}/retry`;
    await act(
      `Run what failed for good in ${sagaId} again?`,
      `retry ${sagaId}`,
      "POST",
      path,
      { note: reason() },
      (saga) => `done, ${isReturn ? "return" : "order"} now ${saga.status}`,
    );
  }

  // One listener for the fixed buttons (circuits and intake).
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) operate(button.dataset.action, button.dataset.service);
  });

  // --- start --------------------------------------------------------------------------------

  setInterval(() => {
    for (const cell of document.querySelectorAll("#workers td.age")) cell.textContent = fmt.ago(cell.dataset.at);
  }, 1000);
  setInterval(sample, SAMPLE_MS);
  setInterval(() => sessionOver || loadHeld(), config.held_poll_s * 1000);
  window.addEventListener("resize", drawCharts);

  loadSession().then((ok) => {
    if (!ok && !sessionOver) markStale("the API did not answer; retrying…");
    connect();
    loadHeld();
    sample();
  });
})();
