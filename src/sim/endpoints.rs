//! The table of GHL endpoints the simulator serves, by name: the names counters, per-endpoint
//! faults (`--fault-endpoints`, `/_sim/faults`) and the admin API's `info` use. A leaf: it imports
//! nothing, so the routes (`api`), the knobs (`control`) and the admin API all read it without
//! importing each other.

/// Endpoint names used by counters and per-endpoint faults: (name, method, path).
pub const ENDPOINTS: &[(&str, &str, &str)] = &[
    ("contacts.search", "POST", "/contacts/search"),
    ("contacts.list", "GET", "/contacts/"),
    ("contacts.get", "GET", "/contacts/{contactId}"),
    ("contacts.tasks", "GET", "/contacts/{contactId}/tasks"),
    (
        "tasks.search",
        "POST",
        "/locations/{locationId}/tasks/search",
    ),
    ("conversations.search", "GET", "/conversations/search"),
    ("opportunities.search.post", "POST", "/opportunities/search"),
    ("opportunities.search.get", "GET", "/opportunities/search"),
    ("opportunities.pipelines", "GET", "/opportunities/pipelines"),
    ("users.list", "GET", "/users/"),
    ("users.search", "GET", "/users/search"),
    (
        "locations.customFields",
        "GET",
        "/locations/{locationId}/customFields",
    ),
    ("locations.get", "GET", "/locations/{locationId}"),
    ("oauth.token", "POST", "/oauth/token"),
    ("oauth.locationToken", "POST", "/oauth/locationToken"),
    (
        "oauth.installedLocations",
        "GET",
        "/oauth/installedLocations",
    ),
];

/// Whether `name` is an endpoint of [`ENDPOINTS`].
pub fn is_known(name: &str) -> bool {
    ENDPOINTS.iter().any(|(n, _, _)| *n == name)
}

/// The name of the endpoint at `method` and `path` (GHL's spelling of the path, e.g.
/// `/contacts/{contactId}`), if the table has it.
pub fn name_of(method: &str, path: &str) -> Option<&'static str> {
    ENDPOINTS
        .iter()
        .find(|(_, m, p)| *m == method && *p == path)
        .map(|(n, _, _)| *n)
}
