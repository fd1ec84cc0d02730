// Swagger UI over the package's OpenAPI schema (chat/templates/chat/api_docs.html);
// a file of its own so that a `script-src 'self'` policy allows it.
const root = document.getElementById('swagger-ui');
globalThis.ui = globalThis.SwaggerUIBundle({
  url: root.dataset.schemaUrl,
  dom_id: '#swagger-ui',
  deepLinking: true,
  presets: [globalThis.SwaggerUIBundle.presets.apis, globalThis.SwaggerUIStandalonePreset],
  layout: 'StandaloneLayout',
});
