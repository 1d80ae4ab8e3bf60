/* carepost console: passkeys (WebAuthn Level 2). Loaded only on the pages that offer them.

   [data-passkey-sign-in]  "Use a passkey" on /login/mfa: fetch the options, call
                           navigator.credentials.get, post the answer, follow the redirect.
   form[data-passkey-register]  "Add a passkey": the same with navigator.credentials.create.

   Each widget names its two JSON endpoints (data-options-url, data-submit-url) and the
   session's CSRF token (data-csrf, sent as X-CSRF-Token). Binary fields travel as
   base64url. The buttons are hidden until this script runs; a browser without WebAuthn
   gets a message saying so and a disabled button. No inline scripts: the CSP forbids them. */
(function () {
  "use strict";

  var UNSUPPORTED =
    "This browser cannot use passkeys. Use a current version of Chrome, Edge, Firefox or " +
    "Safari, or use another way to sign in.";

  function supported() {
    return Boolean(
      window.isSecureContext &&
        window.PublicKeyCredential &&
        navigator.credentials &&
        typeof navigator.credentials.create === "function" &&
        typeof navigator.credentials.get === "function"
    );
  }

  function toBytes(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) { base64 += "="; }
    var binary = window.atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i += 1) { bytes[i] = binary.charCodeAt(i); }
    return bytes.buffer;
  }

  function toText(buffer) {
    if (!buffer) { return null; }
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i += 1) { binary += String.fromCharCode(bytes[i]); }
    return window.btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (item) {
      return { type: item.type, id: toBytes(item.id), transports: item.transports };
    });
  }

  function creationOptions(json) {
    var options = Object.assign({}, json);
    options.challenge = toBytes(json.challenge);
    options.user = Object.assign({}, json.user, { id: toBytes(json.user.id) });
    options.excludeCredentials = descriptors(json.excludeCredentials);
    return options;
  }

  function requestOptions(json) {
    var options = Object.assign({}, json);
    options.challenge = toBytes(json.challenge);
    options.allowCredentials = descriptors(json.allowCredentials);
    return options;
  }

  function credentialJSON(credential) {
    var response = credential.response;
    var out = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: toText(response.clientDataJSON) }
    };
    if (response.attestationObject) {
      out.response.attestationObject = toText(response.attestationObject);
      out.response.transports =
        typeof response.getTransports === "function" ? response.getTransports() : [];
    } else {
      out.response.authenticatorData = toText(response.authenticatorData);
      out.response.signature = toText(response.signature);
      out.response.userHandle = toText(response.userHandle);
    }
    return out;
  }

  function post(url, csrf, body) {
    return window.fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-CSRF-Token": csrf
      },
      body: JSON.stringify(body || {})
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var error = new Error(data.error || fallbackMessage(response.status));
          error.name = "ServerRefusal";
          throw error;
        }
        return data;
      });
    });
  }

  function fallbackMessage(status) {
    if (status === 403) { return "This page has expired. Reload it and try again."; }
    if (status === 429) { return "Too many attempts. Wait a little and try again."; }
    return "carepost could not complete the request (error " + status + "). Try again.";
  }

  function explain(error) {
    switch (error && error.name) {
      case "ServerRefusal":
        return error.message;
      case "NotAllowedError":
      case "AbortError":
        return "The passkey request was cancelled or timed out. Try again when you are ready.";
      case "InvalidStateError":
        return "This device already holds one of your passkeys. Use another device or security key.";
      case "SecurityError":
        return "The browser refused to use a passkey on this address.";
      case "NotSupportedError":
        return "This device has no passkey that carepost accepts.";
      case "TypeError":
        return "carepost could not be reached. Check your connection and try again.";
      default:
        return "Something went wrong with the passkey. Try again.";
    }
  }

  function say(widget, message, kind) {
    var region = widget.querySelector("[data-passkey-status]");
    if (!region) { return; }
    if (!message) { region.replaceChildren(); return; }
    var box = document.createElement("div");
    box.className = "notice notice--" + (kind || "info");
    var paragraph = document.createElement("p");
    paragraph.textContent = message;
    box.appendChild(paragraph);
    region.replaceChildren(box);
  }

  function go(location) {
    // Only ever a path on this site.
    if (typeof location === "string" && location.charAt(0) === "/" && location.charAt(1) !== "/") {
      window.location.assign(location);
    } else {
      window.location.reload();
    }
  }

  function ceremony(widget, button, run) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    say(widget, "Follow your browser's prompt to use your passkey.", "info");
    run()
      .then(function (data) {
        say(widget, "Done. One moment…", "success");
        go(data.redirect);
      })
      .catch(function (error) {
        say(widget, explain(error), "error");
        button.disabled = false;
        button.removeAttribute("aria-busy");
        button.focus();
      });
  }

  function setUp(widget, start) {
    var button = widget.querySelector("[data-passkey-start]");
    if (!button) { return; }
    button.hidden = false;
    if (!supported()) {
      button.disabled = true;
      say(widget, UNSUPPORTED, "warning");
      return;
    }
    widget.querySelectorAll("[data-passkey-input]").forEach(function (input) {
      input.disabled = false;
    });
    start(button);
  }

  function signIn(widget) {
    var csrf = widget.dataset.csrf;
    setUp(widget, function (button) {
      button.addEventListener("click", function () {
        ceremony(widget, button, function () {
          return post(widget.dataset.optionsUrl, csrf).then(function (options) {
            return navigator.credentials.get({ publicKey: requestOptions(options) });
          }).then(function (credential) {
            return post(widget.dataset.submitUrl, csrf, { credential: credentialJSON(credential) });
          });
        });
      });
    });
  }

  function register(form) {
    var csrf = form.dataset.csrf;
    setUp(form, function (button) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var name = form.elements.namedItem("name");
        ceremony(form, button, function () {
          return post(form.dataset.optionsUrl, csrf).then(function (options) {
            return navigator.credentials.create({ publicKey: creationOptions(options) });
          }).then(function (credential) {
            return post(form.dataset.submitUrl, csrf, {
              credential: credentialJSON(credential),
              name: name ? name.value : ""
            });
          });
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-passkey-sign-in]").forEach(signIn);
    document.querySelectorAll("form[data-passkey-register]").forEach(register);
  });
})();
