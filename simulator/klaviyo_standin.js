/* Klaviyo sandbox stand-in for klaviyo.js: same klaviyo object, calls the sandbox's Client API. */
(function () {
  var BASE = __BASE__, COMPANY = __COMPANY__, REVISION = "2025-01-15", KEY = "__kla_sandbox_id";
  var IDS = ["email", "phone_number", "external_id"];
  var ATTRS = ["first_name", "last_name", "organization", "title", "image", "locale"];
  var LEGACY = {$email: "email", $phone_number: "phone_number", $id: "external_id",
    $first_name: "first_name", $last_name: "last_name", $organization: "organization",
    $title: "title", $image: "image"};
  function who() { try { return JSON.parse(localStorage.getItem(KEY) || "{}"); } catch (e) { return {}; } }
  function known(p) { return IDS.some(function (k) { return !!p[k]; }); }
  function log(entry) { (window.__klaviyoSandboxLog = window.__klaviyoSandboxLog || []).push(entry); }
  function post(endpoint, body, label) {
    return fetch(BASE + "/client/" + endpoint + "/?company_id=" + encodeURIComponent(COMPANY), {
      method: "POST", keepalive: true,
      headers: {"Content-Type": "application/vnd.api+json", "revision": REVISION},
      body: JSON.stringify(body)
    }).then(function (r) { log({call: label, status: r.status}); return r.status === 202; },
            function (e) { log({call: label, status: 0, error: String(e)}); return false; });
  }
  function split(props) {
    var attrs = {}, custom = {};
    Object.keys(props || {}).forEach(function (k) {
      var name = LEGACY[k] || k, v = props[k];
      if (v === undefined || v === null || v === "") return;
      if (IDS.indexOf(name) >= 0 || ATTRS.indexOf(name) >= 0) attrs[name] = v; else custom[name] = v;
    });
    if (Object.keys(custom).length) attrs.properties = custom;
    return attrs;
  }
  function identifiers(p) {
    var out = {}; IDS.forEach(function (k) { if (p[k]) out[k] = p[k]; }); return out;
  }
  var api = {
    identify: function (props) {
      var attrs = split(props), current = who();
      IDS.forEach(function (k) { if (attrs[k]) current[k] = attrs[k]; });
      localStorage.setItem(KEY, JSON.stringify(current));
      if (!known(current)) return Promise.resolve(current);
      var merged = Object.assign({}, attrs, identifiers(current));
      return post("profiles", {data: {type: "profile", attributes: merged}}, "identify")
        .then(function () { return current; });
    },
    track: function (name, props) {
      var p = who();
      // Klaviyo does not track anonymous browsers.
      if (!known(p)) { log({call: "track " + name, status: "anonymous"}); return Promise.resolve(false); }
      var properties = Object.assign({}, props || {}), attrs = {
        properties: properties,
        metric: {data: {type: "metric", attributes: {name: String(name)}}},
        profile: {data: {type: "profile", attributes: identifiers(p)}}
      };
      // The Client API carries these two as the event's value and unique_id.
      if (properties.$value !== undefined) {
        attrs.value = Number(properties.$value);
        delete properties.$value;
      }
      if (properties.$event_id !== undefined) {
        attrs.unique_id = String(properties.$event_id);
        delete properties.$event_id;
      }
      return post("events", {data: {type: "event", attributes: attrs}}, "track " + name);
    },
    trackViewedItem: function (item) {
      var p = who();
      if (!known(p)) { log({call: "trackViewedItem", status: "anonymous"}); return Promise.resolve(false); }
      return post("profiles", {data: {type: "profile", attributes: identifiers(p),
        meta: {patch_properties: {append: {"$viewed_items": item}}}}}, "trackViewedItem");
    },
    isIdentified: function () { return Promise.resolve(known(who())); },
    account: function () { return Promise.resolve(COMPANY); },
    cookieDomain: function () { return Promise.resolve(location.hostname); },
    openForm: function () { return Promise.resolve(undefined); }
  };
  function run(entry) {
    var args = Array.prototype.slice.call(entry), method = args.shift();
    var done = typeof args[args.length - 1] === "function" ? args.pop() : null;
    var fn = api[method], result = fn ? fn.apply(null, args) : Promise.resolve(undefined);
    return Promise.resolve(result).then(function (r) { if (done) done(r); return r; });
  }
  var chain = Promise.resolve();
  function queue(entry) { chain = chain.then(function () { return run(entry); }); return chain; }
  var queued = (window._klOnsite && window._klOnsite.slice) ? window._klOnsite.slice() : [];
  var legacy = (window._learnq && window._learnq.slice) ? window._learnq.slice() : [];
  window._klOnsite = {push: function () { for (var i = 0; i < arguments.length; i++) queue(arguments[i]); }};
  window._learnq = {push: window._klOnsite.push};
  var object = {push: window._klOnsite.push};
  Object.keys(api).forEach(function (name) {
    object[name] = function () { return queue([name].concat(Array.prototype.slice.call(arguments))); };
  });
  window.klaviyo = object;
  queued.concat(legacy).forEach(queue);
  chain.then(function () {
    if (known(who())) queue(["track", "Active on Site", {page: location.href}]);
    window.__klaviyoSandboxReady = true;
  });
})();
