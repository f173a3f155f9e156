// taskledger console: the projections page, live. Polls the page's status
// route (GET /v1/projections for the session's key), updates the table and
// the rebuild's progress bar, and draws each projection's lag over the last
// minutes as an SVG built with DOM calls (nothing inline, no libraries). The
// page works without it (reload to see changes).
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  // The most the chart spans (less while the samples are younger, but at
  // least a minute), and how often to look (faster while a rebuild runs).
  const WINDOW_MS = 10 * 60 * 1000;
  const MIN_SPAN_MS = 60 * 1000;
  const POLL_MS = 2000;
  const POLL_REBUILDING_MS = 500;
  // Samples outlive a reload (a form's answer reloads the page) in this
  // tab only; they hold names and numbers, nothing secret.
  const STORE = "taskledger.console.lag";
  const COLORS = ["#1f4f8a", "#c2410c", "#15803d", "#7c3aed", "#b42318", "#0e7490"];
  const SIZE = { width: 900, height: 240, left: 56, right: 150, top: 14, bottom: 28 };

  const svg = (name, attributes, text) => {
    const element = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
    if (text !== undefined) element.textContent = text;
    return element;
  };

  const when = (iso) => (iso ? `${iso.slice(0, 19).replace("T", " ")} UTC` : "");

  const seconds = (total) => {
    const whole = Math.ceil(Math.max(0, total));
    return whole < 60 ? `${whole} s` : `${Math.floor(whole / 60)} min ${whole % 60} s`;
  };

  // As the server writes it (projections.rs, rebuild_summary).
  const summary = (rebuild, running) => {
    let words = `${rebuild.position} of ${rebuild.head} events · ${rebuild.events_per_s.toFixed(0)} events/s`;
    if (running) {
      words += rebuild.eta_seconds == null ? " · starting" : ` · about ${seconds(rebuild.eta_seconds)} left`;
    }
    return words;
  };

  const loadSamples = () => {
    try {
      const samples = JSON.parse(sessionStorage.getItem(STORE) || "[]");
      return Array.isArray(samples) ? samples : [];
    } catch (_) {
      return [];
    }
  };

  const saveSamples = (samples) => {
    try {
      sessionStorage.setItem(STORE, JSON.stringify(samples));
    } catch (_) {
      // Storage may be full or off: the chart then starts afresh on reload.
    }
  };

  const field = (root, name) => root.querySelector(`[data-field="${name}"]`);

  const setText = (root, name, text) => {
    const element = field(root, name);
    if (element && element.textContent !== text) element.textContent = text;
  };

  const updateRow = (projection) => {
    const name = CSS.escape(projection.name);
    const row = document.querySelector(`tr[data-projection="${name}"]`);
    if (!row) return;
    setText(row, "version", String(projection.version));
    setText(row, "position", String(projection.position));
    setText(row, "head", String(projection.head));
    setText(row, "lag_events", String(projection.lag_events));
    setText(row, "lag_seconds", `${projection.lag_seconds.toFixed(1)} s`);
    setText(row, "state", projection.state);
    field(row, "state").className = `badge state-${projection.state}`;
    const failure = field(row, "failure");
    failure.hidden = !projection.failure;
    const at = projection.failed_position == null ? "" : `at #${projection.failed_position}: `;
    failure.textContent = projection.failure ? at + projection.failure : "";
    const paused = projection.state === "paused";
    row.querySelector('form[data-when="unpaused"]').hidden = paused;
    row.querySelector('form[data-when="paused"]').hidden = !paused;

    const rebuild = projection.rebuild;
    const running = Boolean(rebuild && ["building", "swapping"].includes(rebuild.state));
    row.querySelector('button[data-operation="rebuild"]').disabled = running;
    const line = document.querySelector(`tr[data-rebuild="${name}"]`);
    if (!line) return running;
    line.hidden = !rebuild;
    if (!rebuild) return running;
    // Just started, it has not read the log's head yet: the projector's.
    if (running && rebuild.head === 0) rebuild.head = projection.head;
    setText(line, "version", String(rebuild.version));
    setText(line, "state", rebuild.state);
    field(line, "state").className = `badge rebuild-${rebuild.state}`;
    const bar = field(line, "bar");
    const max = Math.max(rebuild.head, rebuild.position, 1);
    bar.max = max;
    bar.value = rebuild.state === "done" ? max : rebuild.position;
    setText(line, "summary", summary(rebuild, running));
    const ended = rebuild.finished_at ? ` · ended ${when(rebuild.finished_at)}` : "";
    setText(line, "when", `started ${when(rebuild.started_at)}${ended}`);
    setText(line, "error", rebuild.error || "");
    return running;
  };

  // The y axis's step: a round whole number (1, 2, 5, 10, 20, …) such that
  // four steps reach `highest`.
  const yStep = (highest) => {
    const wanted = Math.max(1, highest / 4);
    const power = 10 ** Math.floor(Math.log10(wanted));
    for (const step of [1, 2, 5, 10]) {
      if (step * power >= wanted) return step * power;
    }
    return 10 * power;
  };

  // The x axis's labels: where (ms before now) and what, about six of them.
  const xTicks = (span) => {
    const minutes = span / 60_000;
    const every = [0.25, 0.5, 1, 2].find((step) => minutes / step <= 6) ?? 2;
    const ticks = [];
    for (let before = 0; before <= minutes + 1e-9; before += every) {
      const label = before === 0 ? "now" : every < 1 ? `−${Math.round(before * 60)} s` : `−${before} min`;
      ticks.push([before * 60_000, label]);
    }
    return ticks;
  };

  const draw = (chart, samples, now) => {
    const { width, height, left, right, top, bottom } = SIZE;
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;
    const names = [];
    let highest = 0;
    for (const sample of samples) {
      for (const [name, lag] of Object.entries(sample.lags)) {
        if (!names.includes(name)) names.push(name);
        highest = Math.max(highest, lag);
      }
    }
    const yMax = 4 * yStep(highest);
    const oldest = samples.length ? samples[0].t : now;
    const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, now - oldest));
    const x = (t) => left + plotWidth * (1 - (now - t) / span);
    const y = (lag) => top + plotHeight * (1 - lag / yMax);

    const parts = [];
    for (let step = 0; step <= 4; step += 1) {
      const value = (yMax * step) / 4;
      parts.push(svg("line", { x1: left, x2: left + plotWidth, y1: y(value), y2: y(value), class: "grid" }));
      parts.push(svg("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end", class: "axis" }, String(value)));
    }
    for (const [before, label] of xTicks(span)) {
      parts.push(svg("text", { x: x(now - before), y: height - 8, "text-anchor": "middle", class: "axis" }, label));
    }
    names.forEach((name, index) => {
      const color = COLORS[index % COLORS.length];
      const series = samples.filter((sample) => name in sample.lags);
      const points = series.map((sample) => `${x(sample.t).toFixed(1)},${y(sample.lags[name]).toFixed(1)}`);
      if (points.length > 1) {
        const peak = Math.max(...series.map((sample) => sample.lags[name]));
        parts.push(
          svg("polyline", {
            points: points.join(" "),
            fill: "none",
            stroke: color,
            "stroke-width": 2,
            class: "series",
            "data-series": name,
            "data-peak": peak,
          }),
        );
      }
      if (points.length > 0) {
        const [cx, cy] = points.at(-1).split(",");
        parts.push(svg("circle", { cx, cy, r: 3, fill: color }));
      }
      const legendY = top + 6 + index * 20;
      parts.push(svg("rect", { x: width - right + 16, y: legendY - 9, width: 12, height: 12, rx: 2, fill: color }));
      parts.push(svg("text", { x: width - right + 34, y: legendY + 1, class: "legend" }, name));
    });
    chart.replaceChildren(...parts);
  };

  document.addEventListener("DOMContentLoaded", () => {
    const state = document.getElementById("poll-state");
    const chart = document.getElementById("lag-chart");
    if (!state || !chart) return;
    let samples = loadSamples();

    const poll = () => {
      fetch(state.dataset.status, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then((response) => {
          // Redirected: the session ended (sign in again to go on).
          if (response.redirected) throw new Error("signed out");
          if (!response.ok) throw new Error(String(response.status));
          return response.json();
        })
        .then((page) => {
          state.classList.add("on");
          state.textContent = "live";
          const now = Date.now();
          let rebuilding = false;
          const lags = {};
          for (const projection of page.items) {
            rebuilding = updateRow(projection) || rebuilding;
            lags[projection.name] = projection.lag_events;
          }
          samples = samples.filter((sample) => now - sample.t <= WINDOW_MS && sample.t <= now);
          samples.push({ t: now, lags });
          saveSamples(samples);
          draw(chart, samples, now);
          setTimeout(poll, rebuilding ? POLL_REBUILDING_MS : POLL_MS);
        })
        .catch((error) => {
          state.classList.remove("on");
          state.textContent = "reload to update";
          // A passing failure (the service restarting): look again later.
          if (error.message !== "signed out") setTimeout(poll, 5 * POLL_MS);
        });
    };
    draw(chart, samples, Date.now());
    poll();
  });
})();
