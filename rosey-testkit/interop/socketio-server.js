// Interop check, run by hand (see docs/CYTUBE.md): a minimal CyTube-like server on the real socket.io
// 4.5.4 (the version CyTube 3.86 ships), to confirm the Rust client speaks the real library's wire.
// `npm install` here, then `node socketio-server.js`, then `rosey run --config config.json`.
const http = require('http');
const { Server } = require('socket.io');
const PORT = 18337;
const srv = http.createServer((req, res) => {
  const m = req.url.match(/^\/socketconfig\/([\w-]{1,30})\.json$/);
  if (m) {
    res.writeHead(200, {'Content-Type': 'application/json; charset=utf-8'});
    res.end(JSON.stringify({servers: [{url: `http://127.0.0.1:${PORT}`, secure: false}]}));
  } else { res.writeHead(404); res.end('{}'); }
});
const io = new Server(srv, { pingInterval: 1000, pingTimeout: 2000 });
const users = [{name: 'alice', rank: 0, profile: {image: '', text: ''}, meta: {afk: false, muted: false}}];
io.on('connection', (socket) => {
  socket.emit('rank', -1);
  socket.on('joinChannel', (d) => {
    console.log('joinChannel', JSON.stringify(d));
    socket.join('chan');
    socket.emit('chatMsg', {username: 'alice', msg: 'old history', meta: {}, time: Date.now() - 60000});
    socket.emit('userlist', users);
    socket.emit('channelNotRegistered');
  });
  socket.on('login', (d) => {
    console.log('login', JSON.stringify(d));
    socket.emit('rank', 0);
    socket.emit('login', {success: true, name: d.name, guest: true});
    socket.data.name = d.name;
    io.to('chan').emit('addUser', {name: d.name, rank: 0, profile: {image: '', text: ''}, meta: {afk: false, muted: false}});
    setTimeout(() => io.to('chan').emit('chatMsg', {username: 'alice', msg: '!roll 2d6', meta: {}, time: Date.now()}), 300);
  });
  socket.on('chatMsg', (d) => {
    console.log('chatMsg from', socket.data.name, JSON.stringify(d));
    io.to('chan').emit('chatMsg', {username: socket.data.name, msg: d.msg, meta: d.meta || {}, time: Date.now()});
  });
  socket.conn.on('packet', (p) => { if (p.type === 'pong') console.log('pong'); });
  socket.on('disconnect', (r) => console.log('disconnect', r));
});
srv.listen(PORT, '127.0.0.1', () => console.log('listening'));
setTimeout(() => process.exit(0), Number(process.env.LIFETIME_MS || 60000));
