// A minimal CyTube-like server on the real socket.io 4.5.4 (the version CyTube 3.86 ships), to check
// that Rosey's own socket.io client speaks the real library's wire. rosey-bin/tests/cli/interop.rs
// drives it over pipes; it can be run by hand too (docs/CYTUBE.md, "Interop with the real socket.io").
//
//   node socketio-server.js [PORT]     PORT: 0 for any free port; 18337 (config.json's) when left out
//
// Environment: PING_INTERVAL_MS (300) and PING_TIMEOUT_MS (1000), short so that a short test sees
// many pings.
//
// stdout: one JSON line per thing a test checks, starting with `{"listening":PORT}` once the port is
// bound, then `{"event":"connection"}`, `{"event":"joinChannel","data":…}`, `{"event":"login","data":…}`,
// `{"event":"chatMsg","from":NAME,"msg":…}` (chat sent by a client), `{"event":"pong"}` (a client
// answered a ping) and `{"event":"disconnect","reason":…}`.
// stdin: one JSON command a line; `{"say":{"user":"alice","msg":"!roll 2d6"}}` has alice say that in
// the channel. The server exits when stdin closes (so a test that dies leaves no node behind) or on
// SIGTERM.
'use strict';
const http = require('http');
const readline = require('readline');
const { Server } = require('socket.io');

const PORT = Number(process.argv[2] ?? 18337);
const PING_INTERVAL_MS = Number(process.env.PING_INTERVAL_MS || 300);
const PING_TIMEOUT_MS = Number(process.env.PING_TIMEOUT_MS || 1000);
const CHANNEL_ROOM = 'chan';

/** Writes one report line on stdout. */
const report = (line) => process.stdout.write(JSON.stringify(line) + '\n');

const profile = { image: '', text: '' };
const meta = { afk: false, muted: false };
const users = [{ name: 'alice', rank: 0, profile, meta }];

// CyTube's channel discovery: /socketconfig/<channel>.json names the socket.io server (this one).
const srv = http.createServer((req, res) => {
  if (/^\/socketconfig\/[\w-]{1,30}\.json$/.test(req.url)) {
    const url = `http://127.0.0.1:${srv.address().port}`;
    res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify({ servers: [{ url, secure: false }] }));
  } else {
    res.writeHead(404);
    res.end('{}');
  }
});

const io = new Server(srv, { pingInterval: PING_INTERVAL_MS, pingTimeout: PING_TIMEOUT_MS });

/** Sends chat from `user` to everyone in the channel, as CyTube does. */
const chat = (user, msg, msgMeta) =>
  io.to(CHANNEL_ROOM).emit('chatMsg', { username: user, msg, meta: msgMeta || {}, time: Date.now() });

io.on('connection', (socket) => {
  report({ event: 'connection' });
  socket.emit('rank', -1);
  socket.on('joinChannel', (data) => {
    report({ event: 'joinChannel', data });
    socket.join(CHANNEL_ROOM);
    // The join burst as CyTube sends it: history first (the bot must not answer it), then the users.
    socket.emit('chatMsg', { username: 'alice', msg: '!roll 1d4', meta: {}, time: Date.now() - 60000 });
    socket.emit('userlist', users);
    socket.emit('channelNotRegistered');
  });
  socket.on('login', (data) => {
    report({ event: 'login', data });
    socket.emit('rank', 0);
    socket.emit('login', { success: true, name: data.name, guest: true });
    socket.data.name = data.name;
    io.to(CHANNEL_ROOM).emit('addUser', { name: data.name, rank: 0, profile, meta });
  });
  socket.on('chatMsg', (data) => {
    report({ event: 'chatMsg', from: socket.data.name, msg: data.msg });
    chat(socket.data.name, data.msg, data.meta);
  });
  // Engine.IO answers pings below socket.io; its packets show that the client answered.
  socket.conn.on('packet', (packet) => {
    if (packet.type === 'pong') report({ event: 'pong' });
  });
  socket.on('disconnect', (reason) => report({ event: 'disconnect', reason }));
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  let command;
  try {
    command = JSON.parse(line);
  } catch (error) {
    console.error(`socketio-server: not a JSON command: ${line}`);
    return;
  }
  if (command.say) chat(command.say.user, command.say.msg);
}).on('close', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));

srv.on('error', (error) => {
  console.error(`socketio-server: ${error.message}`);
  process.exit(1);
});
srv.listen(PORT, '127.0.0.1', () => report({ listening: srv.address().port }));
