"""The admin console's side of tools/: request models and their rules (models), sign-in
(auth), the configuration as the page shows it (views), changes with their audit entries
(service), and the review lists (review). No web framework: agent/admin/ maps it to HTTP."""
