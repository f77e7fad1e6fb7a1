// BackupManager pages: progressive enhancement only. Every page works without this
// file; with it, filters apply on change, running backups and restores update live
// (Server-Sent Events), the cron builder previews as you type, and the database form
// shows only the chosen engine's options.
(function () {
  "use strict";

  function all(selector, root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(selector));
  }

  // Filters: apply as soon as a choice changes.
  all("form[data-autosubmit]").forEach(function (form) {
    all("select", form).forEach(function (select) {
      select.addEventListener("change", function () { form.submit(); });
    });
  });

  // Buttons that start something slow say so, and are not pressed twice.
  all("form[data-busy]").forEach(function (form) {
    form.addEventListener("submit", function () {
      var button = form.querySelector("button[type=submit]");
      if (!button) { return; }
      button.setAttribute("aria-busy", "true");
      button.textContent = form.getAttribute("data-busy");
      setTimeout(function () { button.disabled = true; }, 0);
    });
  });

  // Copy a freshly created API token.
  all("[data-copy]").forEach(function (button) {
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
      });
    });
  });

  // Live progress of running backups and restores.
  all("[data-live]").forEach(function (box) {
    if (!window.EventSource) { return; }
    var source = new EventSource(box.getAttribute("data-live"));
    function set(name, value) {
      all('[data-field="' + name + '"]', box).forEach(function (el) {
        if (value !== undefined && value !== null && el.tagName !== "PROGRESS") {
          el.textContent = value;
        }
      });
    }
    function update(data) {
      set("status", data.status);
      set("bytes_in", data.bytes_in);
      set("bytes_out", data.bytes_out);
      set("rate", data.rate);
      set("elapsed", data.elapsed);
      var bar = box.querySelector('progress[data-field="progress"]');
      if (bar && typeof data.percent === "number") {
        bar.hidden = false;
        bar.value = data.percent;
      }
      all(".badge", box).forEach(function (badge) {
        badge.className = "badge badge-" + data.status;
        badge.textContent = data.status;
      });
      var headBadge = document.querySelector("[data-status-badge] .badge");
      if (headBadge && box.classList.contains("live")) {
        headBadge.className = "badge badge-" + data.status;
        headBadge.textContent = data.status;
      }
    }
    source.addEventListener("state", function (e) { update(JSON.parse(e.data)); });
    source.addEventListener("progress", function (e) { update(JSON.parse(e.data)); });
    source.addEventListener("done", function (e) {
      update(JSON.parse(e.data));
      source.close();
      box.setAttribute("data-done", "true");
      // The run is over: show its final page (log, checksum, actions).
      if (box.classList.contains("live")) { setTimeout(function () { location.reload(); }, 600); }
    });
  });

  // The cron builder: presets fill the expression; the preview follows the input.
  all("form[data-cron-form]").forEach(function (form) {
    var preset = form.querySelector("[data-cron-preset]");
    var expr = form.querySelector("[data-cron-expr]");
    var tz = form.querySelector("[data-cron-tz]");
    var description = form.querySelector("[data-cron-description]");
    var runs = form.querySelector("[data-cron-runs]");
    var button = form.querySelector("[data-cron-preview-button]");
    if (!preset || !expr || !tz || !description || !runs) { return; }
    if (button) { button.hidden = true; }
    var timer = null;
    var asked = 0;

    function matchPreset() {
      var value = expr.value.trim().replace(/\s+/g, " ");
      var found = all("option", preset).some(function (option) {
        if (option.value === value) { preset.value = value; return true; }
        return false;
      });
      if (!found) { preset.value = "custom"; }
    }
    function refresh() {
      var ask = ++asked;
      var url = "/cron-preview?cron=" + encodeURIComponent(expr.value) +
        "&timezone=" + encodeURIComponent(tz.value || "UTC");
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.json(); })
        .then(function (data) {
          if (ask !== asked) { return; }
          runs.textContent = "";
          if (!data.ok) {
            description.textContent = data.error;
            description.className = "field-error";
            return;
          }
          description.textContent = data.description;
          description.className = "";
          data.runs.forEach(function (run) {
            var item = document.createElement("li");
            item.textContent = run.local + " ";
            var utc = document.createElement("span");
            utc.className = "muted small";
            utc.textContent = "· " + run.utc + (run.shifted ? " · moved past a DST gap" : "");
            item.appendChild(utc);
            runs.appendChild(item);
          });
        })
        .catch(function () { /* the Preview button of the form still works */ });
    }
    function later() {
      clearTimeout(timer);
      timer = setTimeout(refresh, 250);
    }
    preset.addEventListener("change", function () {
      if (preset.value !== "custom") { expr.value = preset.value; }
      else { expr.focus(); }
      later();
    });
    expr.addEventListener("input", function () { matchPreset(); later(); });
    tz.addEventListener("change", later);
    tz.addEventListener("input", later);
    // The server uses the preset unless it is "custom": keep them in step.
    form.addEventListener("submit", matchPreset);
    refresh();
  });

  // The database form: only the chosen engine's options, and its wording.
  all("form[data-engine-form]").forEach(function (form) {
    var select = form.querySelector("[data-engine-select]");
    var groups = all(".engine-options", form);
    var engine = select ? select.value :
      (form.querySelector("input[name=engine]") || { value: "" }).value;
    var nameLabel = form.querySelector('label[for="f-database_name"]');
    function apply() {
      if (select) { engine = select.value; }
      groups.forEach(function (group) {
        var on = group.getAttribute("data-engines").split(" ").indexOf(engine) >= 0;
        group.hidden = !on;
        group.disabled = !on;
      });
      if (nameLabel) {
        nameLabel.textContent = engine === "redis" ? "DB index (0–15)" : "Database name";
      }
    }
    if (select) { select.addEventListener("change", apply); }
    apply();
  });
})();
