// Starts Swagger UI on /docs (api/static.py) from the vendored bundle: what FastAPI's own
// page does inline, in a file, so the page's CSP needs no inline script. validatorUrl null:
// Swagger UI would otherwise show a badge fetched from an outside validator.
"use strict";
window.ui = window.SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset],
});
