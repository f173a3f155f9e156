// taskledger console: /console/api — Swagger UI over /v1/openapi.json, and the
// key its "Try it out" requests carry.
//
// The key lives in `key` below and nowhere else: not in a cookie, not in
// localStorage or sessionStorage, not in Swagger UI's own authorization state
// (its "Authorize" dialog is hidden). It is added as `Authorization: Bearer` to
// the requests Swagger UI sends for "Try it out", and only when they go to this
// page's origin; the document itself is fetched without it. Reloading the page
// forgets it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  const input = document.getElementById("try-key");
  const forget = document.getElementById("try-key-forget");
  const state = document.getElementById("try-key-state");
  if (!root || !input || !forget || !state) return;

  let key = "";
  const show = () => {
    state.textContent = key ? "key set: requests carry it" : "no key: requests go without one";
    state.classList.toggle("on", key !== "");
  };
  input.addEventListener("input", () => {
    key = input.value.trim();
    show();
  });
  forget.addEventListener("click", () => {
    key = "";
    input.value = "";
    show();
  });
  show();

  if (typeof window.SwaggerUIBundle !== "function") {
    root.textContent = "The reference could not be loaded (its script did not run).";
    return;
  }

  window.SwaggerUIBundle({
    url: root.dataset.document,
    domNode: root,
    presets: [window.SwaggerUIBundle.presets.apis],
    // Not the standalone preset: its top bar loads any document by URL and
    // its logo carries an inline <style>, which the CSP refuses.
    layout: "BaseLayout",
    deepLinking: true,
    filter: true,
    displayRequestDuration: true,
    // No badge from the public validator: nothing leaves this origin.
    validatorUrl: null,
    persistAuthorization: false,
    // The request shown (curl, URL) is the one before the key was added, so
    // the key is never written into the page.
    showMutatedRequest: false,
    requestInterceptor: (request) => {
      if (request.loadSpec) return request;
      const target = new URL(request.url, window.location.href);
      if (key && target.origin === window.location.origin) {
        request.headers.Authorization = `Bearer ${key}`;
      }
      return request;
    },
  });
});
