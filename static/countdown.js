// Live countdown for the pay page. Without JavaScript the page shows the expiry time and
// the server still refuses a late payment; this only keeps the payer informed.
(function () {
  "use strict";
  var el = document.querySelector("[data-countdown]");
  if (!el) return;
  var expiresAt = Number(el.getAttribute("data-expires-at-ms"));
  if (!isFinite(expiresAt)) return;
  // Measure against the server's clock: the page was rendered moments ago, so the time left
  // it implies is trusted over a payer's possibly wrong system clock.
  var offset = 0;
  var rendered = Number(el.getAttribute("data-now-ms"));
  if (isFinite(rendered) && rendered > 0) offset = rendered - Date.now();

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function expire() {
    el.textContent = "Expired";
    var msg = document.querySelector("[data-test=expired-message]");
    if (msg) msg.hidden = false;
    var button = document.querySelector("[data-test=pay-button]");
    if (button) button.disabled = true;
    var form = document.querySelector("[data-test=pay-form]");
    if (form) form.setAttribute("aria-disabled", "true");
  }

  function tick() {
    var left = Math.max(0, Math.floor((expiresAt - (Date.now() + offset)) / 1000));
    if (left <= 0) { expire(); return false; }
    var m = Math.floor(left / 60), s = left % 60;
    el.textContent = "Time left: " + m + ":" + pad(s);
    return true;
  }

  el.hidden = false;
  if (tick()) {
    var timer = setInterval(function () { if (!tick()) clearInterval(timer); }, 1000);
  }
})();
