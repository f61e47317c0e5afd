// The page of serve.py: a photo goes to POST analyze, camera frames go over the WebSocket at live.
// The next frame is sent only when the last one's answer is back, so nothing queues up when the
// server is slower than the camera. Each face's labels are drawn on the canvas and written in the list.
'use strict';

const TASKS = ['smile', 'emotion', 'gender'];  // the order predict.py describes them in
const BOX_COLOUR = '#00c800';
const FPS_WINDOW_MS = 2000;  // the frame rate is counted over the last two seconds

const view = document.getElementById('view');
const video = document.getElementById('video');
const photo = document.getElementById('photo');
const cameraButton = document.getElementById('camera');
const statusLine = document.getElementById('status');
const faceList = document.getElementById('faces');
const grab = document.createElement('canvas');  // the frame on its way to the server
let live = null;  // {stream, socket, sentAt, answered: [times]} while the camera runs

function topLabels(face) {
  // ["smile 0.93", "happy 0.81", "male 0.88"]: each task's top class and its probability
  return TASKS.filter((task) => face[task]).map((task) => {
    const head = face[task];
    return head.label + ' ' + head.probabilities[head.label].toFixed(2);
  });
}

function draw(picture, faces) {
  view.width = picture.width;
  view.height = picture.height;
  const ctx = view.getContext('2d');
  ctx.drawImage(picture, 0, 0);
  for (const face of faces) {
    const [x, y, w, h] = face.box;
    const size = Math.max(11, Math.min(24, Math.round(w / 9)));
    ctx.lineWidth = Math.max(2, size / 6);
    ctx.strokeStyle = BOX_COLOUR;
    ctx.strokeRect(x, y, w, h);
    ctx.font = size + 'px sans-serif';
    const lines = topLabels(face);
    const lineHeight = Math.round(size * 1.3);
    const top = y >= lines.length * lineHeight ? y - lines.length * lineHeight : y + h;
    lines.forEach((text, i) => {
      ctx.fillStyle = BOX_COLOUR;
      ctx.fillRect(x, top + i * lineHeight, ctx.measureText(text).width + 8, lineHeight);
      ctx.fillStyle = '#000';
      ctx.fillText(text, x + 4, top + i * lineHeight + size);
    });
  }
}

function list(faces) {
  faceList.replaceChildren(...faces.map((face, i) => {
    const item = document.createElement('li');
    const track = face.track === undefined ? '' : ' (track ' + face.track + ')';
    item.textContent = 'face ' + (i + 1) + track + ': ' + topLabels(face).join(', ');
    return item;
  }));
  if (!faces.length) {
    const item = document.createElement('li');
    item.textContent = 'no face found';
    faceList.replaceChildren(item);
  }
}

function say(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle('error', Boolean(isError));
}

// ------------------------------------------------------------------------------ a photo

photo.addEventListener('change', async () => {
  const file = photo.files[0];
  if (!file) return;
  stopCamera();
  const form = new FormData();
  form.append('file', file);
  say('analyzing ' + file.name + '\u2026');
  const start = performance.now();
  try {
    const response = await fetch('analyze', {method: 'POST', body: form});
    const answer = await response.json();
    if (!response.ok) return say(answer.error || response.statusText, true);
    draw(await createImageBitmap(file), answer.faces);
    list(answer.faces);
    say(file.name + ': ' + answer.faces.length + ' face(s), round trip ' + Math.round(performance.now() - start) +
        ' ms, server ' + Math.round(answer.server_ms) + ' ms');
  } catch (err) {
    say(String(err), true);
  } finally {
    photo.value = '';  // the same file can be picked again
  }
});

// ------------------------------------------------------------------------------ the camera

function sendFrame() {
  if (!live || live.socket.readyState !== WebSocket.OPEN) return;
  grab.width = video.videoWidth;
  grab.height = video.videoHeight;
  grab.getContext('2d').drawImage(video, 0, 0);
  grab.toBlob((blob) => {
    if (!live || live.socket.readyState !== WebSocket.OPEN) return;
    live.sentAt = performance.now();
    live.socket.send(blob);
  }, 'image/jpeg', 0.85);
}

function framesPerSecond(now) {
  live.answered = live.answered.filter((t) => now - t <= FPS_WINDOW_MS);
  live.answered.push(now);
  const span = now - live.answered[0];
  return span > 0 ? 1000 * (live.answered.length - 1) / span : 0;
}

function answered(event) {
  if (!live) return;  // the camera was stopped while this frame was on its way
  const now = performance.now();
  const answer = JSON.parse(event.data);
  if (answer.error) {
    say(answer.error, true);
  } else {
    draw(grab, answer.faces);
    list(answer.faces);
    const fps = framesPerSecond(now);
    statusLine.dataset.fps = fps.toFixed(1);
    say('live: ' + fps.toFixed(1) + ' frames/s, round trip ' + Math.round(now - live.sentAt) + ' ms, server ' +
        Math.round(answer.server_ms) + ' ms');
  }
  sendFrame();
}

async function startCamera() {
  cameraButton.disabled = true;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: false});
    video.srcObject = stream;
    await video.play();
    const url = new URL('live', location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(url);
    live = {stream: stream, socket: socket, sentAt: 0, answered: []};
    socket.addEventListener('open', sendFrame);
    socket.addEventListener('message', answered);
    socket.addEventListener('close', (event) => {
      if (live && live.socket === socket) {
        stopCamera();
        say('the server closed the live connection' + (event.reason ? ': ' + event.reason : ''), true);
      }
    });
    cameraButton.textContent = 'Stop camera';
    say('camera started');
  } catch (err) {
    stopCamera();
    say('the camera cannot be started: ' + err.message, true);
  } finally {
    cameraButton.disabled = false;
  }
}

function stopCamera() {
  if (!live) return;
  const {stream, socket} = live;
  live = null;
  socket.close();
  stream.getTracks().forEach((track) => track.stop());
  video.srcObject = null;
  cameraButton.textContent = 'Start camera';
}

cameraButton.addEventListener('click', () => (live ? stopCamera() : startCamera()));
