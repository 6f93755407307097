// Progressive enhancement only: every page works without this script.
"use strict";

// Countdowns: "time left" cells tick every second.
function formatLeft(ms) {
  if (ms <= 0) return "due";
  var s = Math.floor(ms / 1000);
  var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d > 0) return d + "d " + h + "h";
  if (h > 0) return h + "h " + m + "m";
  return m + "m " + (s % 60) + "s";
}

function tick() {
  var now = Date.now();
  document.querySelectorAll(".countdown[data-until]").forEach(function (el) {
    var until = Date.parse(el.getAttribute("data-until"));
    if (!isNaN(until)) el.textContent = formatLeft(until - now);
  });
}

document.addEventListener("DOMContentLoaded", function () {
  tick();
  setInterval(tick, 1000);
  // A form is sent once: its buttons are disabled while the next page loads.
  document.querySelectorAll("form[method=post]").forEach(function (form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    });
  });
});
