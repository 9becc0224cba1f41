// The print button (an inline handler would need a weaker Content-Security-Policy).
(function () {
  "use strict";
  var button = document.querySelector("[data-print]");
  if (button) { button.addEventListener("click", function () { window.print(); }); }
}());
