// Swagger UI for this deployment's own /openapi.yaml (its task types included).
// "Authorize" takes a bearer token for "Try it out"; it is kept for this tab only.
window.ui = SwaggerUIBundle({
  url: "/openapi.yaml",
  dom_id: "#swagger-ui",
  deepLinking: true,
  displayRequestDuration: true,
  tryItOutEnabled: false,
  validatorUrl: null, // the public validator would send the spec elsewhere
});
