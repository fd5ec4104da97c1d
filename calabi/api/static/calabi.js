// Calabi Registry pages: progressive enhancement only; every page works without it.
(function () {
  "use strict";

  // Times: the server renders UTC in <time datetime>; show them in the viewer's time zone.
  var format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) { return; }
      el.title = el.textContent.trim() + (zone ? " (shown in " + zone + ")" : "");
      el.textContent = format.format(when);
    });
  }

  // Dialogs: links with data-dialog open the <dialog> (without JS they go to a confirmation page).
  function dialogs() {
    document.querySelectorAll("[data-dialog]").forEach(function (link) {
      link.addEventListener("click", function (event) {
        var dialog = document.getElementById(link.getAttribute("data-dialog"));
        if (!dialog || typeof dialog.showModal !== "function") { return; }
        event.preventDefault();
        var menu = link.closest("details.menu");
        if (menu) { menu.open = false; }
        dialog.showModal();
        var first = dialog.querySelector("textarea, input:not([type=hidden]), button[type=submit]");
        if (first) { first.focus(); }
      });
    });
    document.querySelectorAll("dialog [data-close]").forEach(function (el) {
      el.addEventListener("click", function (event) {
        event.preventDefault();
        el.closest("dialog").close();
      });
    });
    // Clicking outside the open Stage menu closes it.
    document.addEventListener("click", function (event) {
      document.querySelectorAll("details.menu[open]").forEach(function (menu) {
        if (!menu.contains(event.target)) { menu.open = false; }
      });
    });
  }

  // Live status of a promotion: poll its status; reload when it changes, unless the user is typing.
  function poller() {
    var box = document.getElementById("promotion-status");
    if (!box || box.getAttribute("data-live") !== "true") { return; }
    var url = box.getAttribute("data-poll-url");
    var seen = [box.getAttribute("data-status"), box.getAttribute("data-approvals"), box.getAttribute("data-updated")].join("|");
    var busy = false;
    function typing() {
      return Array.prototype.some.call(document.querySelectorAll("main textarea, main input[type=text]"), function (el) {
        return el.value.trim() !== "";
      });
    }
    var timer = setInterval(function () {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          var type = response.headers.get("content-type") || "";
          return response.ok && type.indexOf("application/json") === 0 ? response.json() : null;
        })
        .then(function (state) {
          if (!state) { return; }
          var now = [state.status, String(state.approvals), String(state.updated)].join("|");
          if (now === seen) { return; }
          if (typing()) {
            document.querySelector(".stale-banner").hidden = false;
            clearInterval(timer);
          } else {
            window.location.reload();
          }
        })
        .catch(function () { /* try again on the next tick */ })
        .then(function () { busy = false; });
    }, 1500);
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    dialogs();
    poller();
  });
})();
