// Renders onsite snippets with the store template engines (npm: liquidjs, handlebars, twig),
// parses every <script> of the result with acorn and runs it against a recording stand-in of the
// klaviyo object. Reads {"cases": [...]} on stdin, writes {"results": [...]} on stdout.
// A case: {id, engine: "html" | "liquid" | "handlebars" | "twig" | "ast", template, context,
// helper (Handlebars helper source), globals (page variables for plain-JS snippets), run (false:
// parse only)}.
import { readFileSync } from 'node:fs'
import vm from 'node:vm'
import * as acorn from 'acorn'
import { Liquid } from 'liquidjs'
import Handlebars from 'handlebars'
import Twig from 'twig'

const SCRIPT = /<script\b([^>]*)>([\s\S]*?)<\/script>/gi

async function render(c) {
  if (c.engine === 'liquid') return new Liquid().parseAndRender(c.template, c.context || {})
  if (c.engine === 'handlebars') {
    const hb = Handlebars.create()
    new Function('Handlebars', c.helper)(hb)
    return hb.compile(c.template, { strict: false })(c.context || {})
  }
  if (c.engine === 'twig') {
    Twig.cache(false)
    return Twig.twig({ data: c.template, rethrow: true }).render(c.context || {})
  }
  return c.template
}

function strip(node) {
  // Positions and raw spellings differ between equal programs (quotes, spacing).
  if (Array.isArray(node)) return node.map(strip)
  if (node && typeof node === 'object') {
    const out = {}
    for (const [key, value] of Object.entries(node)) {
      if (['start', 'end', 'loc', 'range', 'raw'].includes(key)) continue
      out[key] = strip(value)
    }
    return out
  }
  return node
}

function run(scripts, globals) {
  const calls = []
  const record = (name) => (...args) => {
    if (typeof args[args.length - 1] === 'function') args.pop()
    calls.push([name, ...args])
    return Promise.resolve(true)
  }
  const klaviyo = {
    identify: record('identify'),
    track: record('track'),
    trackViewedItem: record('trackViewedItem'),
    push: (entry) => calls.push(entry),
  }
  const sandbox = { klaviyo, Math, Date, JSON, Promise, ...JSON.parse(JSON.stringify(globals || {})) }
  sandbox.window = sandbox
  const context = vm.createContext(sandbox)
  for (const code of scripts) vm.runInContext(code, context)
  const legacy = Array.isArray(context._learnq) ? context._learnq.map((e) => e) : []
  return JSON.parse(JSON.stringify([...calls, ...legacy]))
}

async function one(c) {
  const result = { id: c.id }
  try {
    if (c.engine === 'ast') {
      result.ast = strip(acorn.parse(c.template, { ecmaVersion: 'latest' }))
      return result
    }
    const html = await render(c)
    result.html = html
    const scripts = []
    const opened = (html.match(/<script\b/gi) || []).length
    for (const match of html.matchAll(SCRIPT)) scripts.push(match[2])
    result.scripts = scripts.length
    result.opened = opened
    result.errors = []
    for (const code of scripts) {
      try {
        acorn.parse(code, { ecmaVersion: 'latest' })
      } catch (err) {
        result.errors.push(`${err.message}: ${code.slice(Math.max(0, err.pos - 40), err.pos + 40)}`)
      }
    }
    if (c.run !== false && !result.errors.length && opened === scripts.length) {
      result.calls = run(scripts, c.globals)
    }
  } catch (err) {
    result.errors = [String(err && err.stack ? err.stack : err)]
  }
  return result
}

const input = JSON.parse(readFileSync(0, 'utf8'))
const results = []
for (const c of input.cases) results.push(await one(c))
process.stdout.write(JSON.stringify({ results }))
