// fedcare dashboard: the live parts of pages (no build step, no external code).
// A page opts in with data-* attributes; see the templates. Kept small on purpose.
"use strict";
window.fedcare = window.fedcare || {};
