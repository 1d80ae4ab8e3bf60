/* Import wizard: refuse a file over the server's limit before uploading it (the server
   refuses it too, with the same words; this only spares the wait). No inline scripts:
   the CSP forbids them. */
(function () {
  "use strict";

  function check(input) {
    var max = Number(input.dataset.maxBytes || 0);
    var file = input.files && input.files[0];
    input.setCustomValidity(max && file && file.size > max ? input.dataset.tooLarge || "" : "");
  }

  document.addEventListener("change", function (event) {
    var input = event.target;
    if (input.matches && input.matches("input[type=file][data-max-bytes]")) {
      check(input);
      input.reportValidity();
    }
  });
})();
