// Cascade dashboard: live refresh of the page's #live part and the action buttons.
// Plain JavaScript, no build step, no third-party code: the parent may be offline.
(function () {
  "use strict";
  var body = document.body;
  var csrf = body.dataset.csrf;
  var base = body.dataset.base;
  var live = document.getElementById("live");
  var state = document.getElementById("live-state");
  var interval = parseInt(body.dataset.interval, 10) || 2000;
  var busy = false;

  function mark(ok) {
    if (!state) return;
    state.className = "live-state " + (ok ? "on" : "off");
  }

  var again = false;

  function refresh() {
    if (!live) return Promise.resolve();
    if (busy) { again = true; return Promise.resolve(); }  // once the one in flight is done
    busy = true;
    return fetch(live.dataset.live, {credentials: "same-origin", cache: "no-store",
                                     headers: {"Accept": "text/html"}})
      .then(function (r) {
        if (r.status === 401) { window.location.href = body.dataset.login; return; }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text().then(function (html) { live.innerHTML = html; mark(true); });
      })
      .catch(function () { mark(false); })
      .then(function () {
        busy = false;
        if (again) { again = false; return refresh(); }
      });
  }

  function show(id, visible) { document.getElementById(id).hidden = !visible; }

  function flash(ok, envelope) {
    var data = (envelope && envelope.data) || {};
    var box = document.getElementById("flash");
    box.className = "flash " + (ok ? "ok" : "bad");
    document.getElementById("flash-message").textContent =
      (envelope && envelope.message) || (ok ? "ok" : "error");
    var secret = ok && data.api_secret;
    show("flash-secret", !!secret);
    document.getElementById("flash-key").textContent = secret ? data.api_key : "";
    document.getElementById("flash-api-secret").textContent = secret ? data.api_secret : "";
    var link = document.getElementById("flash-link");
    var run = ok && data.runs && data.runs.length ? data.runs[0].schedule_run_id : null;
    link.hidden = !run;
    if (run) {
      link.href = base + "/runs/" + encodeURIComponent(run);
      link.textContent = link.href.replace(window.location.origin, "");
      link.id = "flash-link";
    }
    box.hidden = false;
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest("button[data-action]");
    if (!button) return;
    ev.preventDefault();
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    fetch(button.dataset.action, {method: "POST", credentials: "same-origin",
                                  headers: {"X-CSRF-Token": csrf, "Accept": "application/json"}})
      .then(function (r) {
        return r.json().then(function (j) { flash(r.ok, j); },
                             function () { flash(false, {message: "HTTP " + r.status}); });
      })
      .catch(function (e) { flash(false, {message: String(e)}); })
      .then(function () { button.disabled = false; return refresh(); });
  });

  if (live) {
    mark(true);
    window.setInterval(refresh, interval);
  }
})();
