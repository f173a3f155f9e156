// taskledger console: live rows on the task list. Plain JavaScript, no
// libraries; the page works without it (reload to see changes).
//
// The changes come from /v1's `GET /v1/tasks/stream` (through
// /console/tasks/live, with the session's key): one `task` event per status
// change of a task the key may see, `data` = {task_id, status, ...}, `id` =
// its position in the log. On a dropped connection EventSource reconnects
// by itself and sends the last id as Last-Event-ID, so no change is missed.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const state = document.getElementById("live-state");
  const rows = document.getElementById("rows");
  if (!state || !rows || typeof EventSource === "undefined") return;

  let pending = null;
  const changed = new Set();

  // Reload the counts and rows (server-rendered, same filters and page),
  // at most every half second however many events arrive.
  const refresh = () => {
    pending = null;
    fetch(state.dataset.rows, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then((response) => {
        if (response.redirected || !response.ok) throw new Error(String(response.status));
        return response.text();
      })
      .then((html) => {
        rows.innerHTML = html;
        for (const id of changed) {
          const row = rows.querySelector(`tr[data-task="${CSS.escape(id)}"]`);
          if (row) row.classList.add("changed");
        }
        changed.clear();
      })
      .catch(() => {
        state.classList.remove("on");
        state.textContent = "reload to update";
      });
  };

  const source = new EventSource(state.dataset.live);
  source.addEventListener("open", () => {
    state.classList.add("on");
    state.textContent = "live";
  });
  source.addEventListener("task", (event) => {
    try {
      changed.add(JSON.parse(event.data).task_id);
    } catch (_) {
      // An event we cannot read still means something changed.
    }
    if (pending === null) pending = setTimeout(refresh, 500);
  });
  source.addEventListener("error", () => {
    state.classList.remove("on");
    // Closed: refused (signed out, key revoked), so no reconnect follows.
    state.textContent = source.readyState === EventSource.CLOSED ? "reload to update" : "reconnecting…";
  });
});
