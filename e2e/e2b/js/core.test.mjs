// The published e2b JavaScript SDK (pinned in package.json), unmodified, against Airlock's
// e2b-compatible API: the core flow. Run by e2e/tests/e2b_sdk.rs with `node --test`; the SDK is
// loaded from AIRLOCK_E2B_JS (the directory `make e2b-sdks` ran `npm ci` in). Environment as for
// e2e/e2b/test_python_sdk.py.
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import test from 'node:test'

const require = createRequire(`${process.env.AIRLOCK_E2B_JS}/package.json`)
const { Sandbox, CommandExitError, SandboxNotFoundError, AuthenticationError } = require('e2b')

test('create, commands, files, timeout and kill through the JS SDK', async () => {
  const sbx = await Sandbox.create('base', { timeoutMs: 600_000, metadata: { suite: 'js-sdk' }, envs: { GREETING: 'hi' } })
  try {
    const r = await sbx.commands.run('echo out; echo err >&2; echo $GREETING')
    assert.equal(r.stdout, 'out\nhi\n')
    assert.equal(r.stderr, 'err\n')
    assert.equal(r.exitCode, 0)
    await assert.rejects(sbx.commands.run('echo no >&2; exit 3'), (e) => e instanceof CommandExitError && e.exitCode === 3 && e.stderr === 'no\n')

    const h = await sbx.commands.run('cat', { background: true, stdin: true })
    await sbx.commands.sendStdin(h.pid, 'line\n')
    await sbx.commands.closeStdin(h.pid)
    assert.equal((await h.wait()).stdout, 'line\n')
    const sleeper = await sbx.commands.run('sleep 600', { background: true })
    assert.ok((await sbx.commands.list()).some((p) => p.pid === sleeper.pid))
    assert.equal(await sbx.commands.kill(sleeper.pid), true)
    assert.equal(await sbx.commands.kill(sleeper.pid), false)

    await sbx.files.write('/tmp/js/a.txt', 'hello')
    assert.equal(await sbx.files.read('/tmp/js/a.txt'), 'hello')
    assert.equal(await sbx.files.exists('/tmp/js/a.txt'), true)
    assert.deepEqual((await sbx.files.list('/tmp/js')).map((e) => e.name), ['a.txt'])
    assert.equal(await sbx.files.makeDir('/tmp/js/d'), true)
    assert.equal(await sbx.files.makeDir('/tmp/js/d'), false)
    await sbx.files.remove('/tmp/js/a.txt')
    assert.equal(await sbx.files.exists('/tmp/js/a.txt'), false)

    const before = await sbx.getInfo()
    assert.equal(before.templateId, 'base')
    assert.deepEqual(before.metadata, { suite: 'js-sdk' })
    await sbx.setTimeout(1_800_000)
    const after = await sbx.getInfo()
    assert.ok(after.endAt.getTime() >= Date.now() + 1_700_000, `endAt ${after.endAt.toISOString()}`)

    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await again.commands.run('echo again')).stdout, 'again\n')
  } finally {
    await sbx.kill()
  }
})

test('errors are e2b-shaped for the JS SDK', async () => {
  await assert.rejects(Sandbox.connect('e2b-nosuch'), (e) => e instanceof SandboxNotFoundError)
  assert.equal(await Sandbox.kill('e2b-nosuch'), false)
  await assert.rejects(Sandbox.create('base', { apiKey: 'not-a-token' }), (e) => e instanceof AuthenticationError)
  await assert.rejects(Sandbox.create('base', { apiKey: process.env.AIRLOCK_E2B_NO_ACCESS_KEY }), /may not create/)
})
