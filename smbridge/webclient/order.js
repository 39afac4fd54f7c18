// When and where the browser dials after losing its session, pure (PROTOCOL §4.4-4.6).
// The same plans as the Python keeper (smbridge/client/order.py and
// smbridge/roster/selection.py); a target is {uri, name}: a wss:// URI to dial.

export const RECONNECT_TOP_TRIES = 3;
export const CLIENT_TYPE = "smbridge-webclient";

/** Pause before pass n: none before the first, then initial * factor**(n-1), capped. */
export class Backoff {
  constructor(initial = 0.5, factor = 2.0, maximum = 30.0) {
    Object.assign(this, { initial, factor, maximum });
  }

  delay(n) {
    return n <= 0 ? 0 : Math.min(this.initial * this.factor ** (n - 1), this.maximum);
  }
}

export const DEFAULT_BACKOFF = new Backoff();

/** Pauses (seconds) before each ResumeSession; their running sum stays under linger. */
export function resumeDelays(linger, tries = 4, backoff = DEFAULT_BACKOFF) {
  const delays = [];
  let spent = 0;
  for (let n = 0; n < Math.max(tries, 1); n++) {
    const pause = backoff.delay(n);
    if (delays.length && spent + pause >= linger) break;
    delays.push(pause);
    spent += pause;
  }
  return delays;
}

/** A URI as a key: the same bridge with or without the client-type query parameter. */
export function uriKey(uri) {
  return uri.replace(/([?&])inin_client_type=[^&#]*&?/i, "$1").replace(/[?&]$/, "");
}

function once(targets) {
  const seen = new Set();
  return targets.filter((t) => !seen.has(uriKey(t.uri)) && seen.add(uriKey(t.uri)));
}

/** The top group topTries times, then every group in order; each target once a pass.
 * Only the first attempt of a pass waits: backoff.delay(firstPass + pass). */
export function reconnectPlan(groups, topTries = RECONNECT_TOP_TRIES, backoff = DEFAULT_BACKOFF,
  firstPass = 0) {
  const top = groups.length ? once(groups[0]) : [];
  const everything = once(groups.flat());
  const passes = [...Array(Math.max(topTries, 0)).fill(top), everything].filter((p) => p.length);
  const plan = [];
  passes.forEach((targets, n) => {
    targets.forEach((target, i) => {
      plan.push({ delay: i === 0 ? backoff.delay(firstPass + n) : 0, target,
        pass: firstPass + n });
    });
  });
  return plan;
}

/** "?inin_client_type=..." added when the URI has none: a browser cannot set the header. */
export function withClientType(uri, clientType = CLIENT_TYPE) {
  if (/[?&]inin_client_type=/i.test(uri)) return uri;
  return `${uri}${uri.includes("?") ? "&" : "?"}inin_client_type=${encodeURIComponent(clientType)}`;
}

/** The URI to dial for a roster entry: its uri, else wss://fqdn:ports.wss/<name>/session;
 * null when it has neither (not reachable over wss). */
export function entryUri(entry) {
  if (typeof entry.uri === "string" && entry.uri) return entry.uri;
  const host = entry.fqdn || entry.name;
  const port = entry.ports && entry.ports.wss;
  if (typeof host !== "string" || !host || !Number.isInteger(port) || !entry.name) return null;
  const bracketed = host.includes(":") ? `[${host}]` : host;
  return `wss://${bracketed}:${port}/${encodeURIComponent(entry.name)}/session`;
}

function target(entry, uriFor) {
  const uri = (uriFor || entryUri)(entry);
  return uri ? { uri, name: entry.name ?? null } : null;
}

/** Targets of a roster in its order: available entries first, `leaving` never. */
export function rosterTargets(roster, leaving = null, uriFor = null) {
  const entries = (Array.isArray(roster) ? roster : [])
    .filter((e) => e && typeof e === "object" && e.name !== leaving);
  const ordered = [...entries.filter((e) => e.available !== false),
    ...entries.filter((e) => e.available === false)];
  return once(ordered.map((e) => target(e, uriFor)).filter(Boolean));
}

/** Migrate: each bridge of the roster once, best first, without pauses. */
export function migratePlan(roster, leaving = null, uriFor = null) {
  return rosterTargets(roster, leaving, uriFor).map((t) => ({ delay: 0, target: t, pass: 0 }));
}

// --- selection rules (smbridge/roster/selection.py) -------------------------------
const THIS_LOCATION = "<This Location>";
const CIC_LOCATIONS = ["<CIC Server Location>", "<IC Server Location>"];
const AUDIO_PATH = "<Other Locations in Audio Path>";
const ANY_LOCATION = "<Any Location>";
const DEFAULT_RULE = { prioritized: [[THIS_LOCATION]], excluded: [], others: true };

function parseRule(value) {
  if (Array.isArray(value)) {
    value = { prioritized: value.filter((v) => v !== ANY_LOCATION),
      others: value.includes(ANY_LOCATION) };
  }
  if (!value || typeof value !== "object") throw new Error("a rule is a list or a mapping");
  const raw = value.prioritized ?? [THIS_LOCATION];
  return {
    prioritized: raw.map((e) => (typeof e === "string" ? [e] : [...e])),
    excluded: [...(value.excluded || [])],
    others: value.others ?? true,
  };
}

/** The resolved rule for a user at `location` from a site's selectionRules. */
export function ruleForUser(rules, location) {
  let rule = DEFAULT_RULE;
  let cicLocation = null;
  try {
    if (rules && typeof rules === "object") {
      cicLocation = rules.cicLocation ?? null;
      const own = location != null && rules.locations && rules.locations[location];
      rule = own ? parseRule(own) : rules.default ? parseRule(rules.default) : DEFAULT_RULE;
    }
  } catch {
    rule = DEFAULT_RULE; // an unreadable rule falls back to the default one
  }
  const seen = new Set();
  const groups = [];
  for (const group of rule.prioritized) {
    const out = [];
    for (const name of group) {
      const real = name === THIS_LOCATION ? location
        : CIC_LOCATIONS.includes(name) ? cicLocation : name === AUDIO_PATH ? null : name;
      if (real != null && !seen.has(real)) {
        seen.add(real);
        out.push(real);
      }
    }
    if (out.length) groups.push(out);
  }
  return { groups, excluded: new Set(rule.excluded), others: rule.others };
}

function shuffle(items, random) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

const onBackup = (e) => (e.cic && e.cic.role === "backup" ? 1 : 0);

/** The roster in groups for one user (PROTOCOL §4.4): prioritized locations, then other
 * off-server, then other on-server bridges; shuffled within a group, a bridge on a
 * pair's backup CIC server last in its group. */
export function orderRoster(roster, rule, random = Math.random) {
  const entries = roster.filter((e) => !rule.excluded.has(String(e.location || "")));
  const taken = new Set();
  const groups = [];
  const take = (pred) => {
    const group = entries.filter((e) => !taken.has(e) && pred(e));
    group.forEach((e) => taken.add(e));
    if (group.length) groups.push(shuffle(group, random).sort((a, b) => onBackup(a) - onBackup(b)));
  };
  for (const locations of rule.groups) take((e) => locations.includes(String(e.location || "")));
  if (rule.others) {
    take((e) => e.kind === "off-server");
    take(() => true);
  }
  return groups;
}

/** Groups of targets from a kept roster ({roster, selectionRule, location}); the URI the
 * page started from is the last group, always. Each URI appears once, in its first group. */
export function attemptGroups(kept, typedUri, random = Math.random, uriFor = null) {
  const roster = kept && Array.isArray(kept.roster)
    ? kept.roster.filter((e) => e && typeof e === "object") : [];
  const rule = ruleForUser(kept && kept.selectionRule, kept && kept.location);
  const groups = orderRoster(roster, rule, random)
    .map((g) => g.map((e) => target(e, uriFor)).filter(Boolean));
  if (typedUri) groups.push([{ uri: typedUri, name: null }]);
  const seen = new Set();
  return groups.map((g) => g.filter((t) => !seen.has(uriKey(t.uri)) && seen.add(uriKey(t.uri))))
    .filter((g) => g.length);
}
