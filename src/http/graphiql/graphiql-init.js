// Starts GraphiQL (the vendored builds the gateway serves) on this gateway's endpoints:
// queries and mutations over POST /graphql, subscriptions over /graphql/ws
// (graphql-transport-ws). The API key goes in the Headers tab as `Authorization: Bearer <key>`;
// the WebSocket has no headers, so the same headers travel in its `connection_init` payload.
(function () {
  'use strict';
  const root = document.getElementById('graphiql');
  const url = new URL(root.dataset.endpoint, window.location.href).href;
  const socket = new URL(root.dataset.subscriptionEndpoint, window.location.href);
  socket.protocol = socket.protocol === 'https:' ? 'wss:' : 'ws:';

  // One fetcher per set of headers: a changed key opens a new WebSocket with it.
  const fetchers = new Map();
  function fetcherFor(headers) {
    const id = JSON.stringify(headers || {});
    let fetcher = fetchers.get(id);
    if (!fetcher) {
      fetcher = GraphiQL.createFetcher({
        url,
        subscriptionUrl: socket.href,
        wsConnectionParams: headers || {},
      });
      fetchers.set(id, fetcher);
    }
    return fetcher;
  }

  const defaultHeaders = JSON.stringify({ Authorization: 'Bearer <your API key>' }, null, 2);
  const defaultQuery = [
    '# Put your API key in the Headers tab below (Authorization: Bearer <key>),',
    '# then run this query with the play button or Ctrl-Enter.',
    '{',
    '  locations {',
    '    id',
    '    name',
    '  }',
    '}',
    '',
  ].join('\n');

  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, {
      fetcher: (params, options) => fetcherFor(options && options.headers)(params, options),
      defaultQuery,
      defaultHeaders,
      headerEditorEnabled: true,
      shouldPersistHeaders: true,
      defaultEditorToolsVisibility: 'headers',
    }),
  );
})();
