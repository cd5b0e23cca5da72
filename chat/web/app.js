// The chat page: microphone -> Opus (WebCodecs) -> Ogg pages -> websocket; replies back the same way.
import { OggDemuxer, OggOpusMuxer } from "./ogg.js";

const KIND = { HANDSHAKE: 0, AUDIO: 1, TEXT: 2, CONTROL: 3, METADATA: 4, ERROR: 5, PING: 6 };
const $ = (id) => document.getElementById(id);

// Everything the page measured, also read by the browser test.
const stats = window.moshiStats = {
  state: "disconnected", backend: null, sentSamples: 0, receivedSamples: 0, text: "", errors: [],
  latencyMs: null, rttMs: null, sampleRate: null, replyEnergy: 0,
};

let session = null;

function setState(state, detail = "") {
  stats.state = state;
  $("state").textContent = state + (detail ? `: ${detail}` : "");
  $("state").dataset.state = state;
  $("connect").textContent = state === "disconnected" || state === "error" ? "Mic on" : "Mic off";
}

function showError(text) {
  stats.errors.push(text);
  $("errors").textContent = text;
}

function kindMessage(kind, payload) {
  const msg = new Uint8Array(1 + payload.length);
  msg[0] = kind;
  msg.set(payload, 1);
  return msg;
}

async function pickRate() {
  // Mimi works at 24 kHz; Opus accepts it, but fall back to 48 kHz where an encoder refuses it.
  if (!("AudioEncoder" in window) || !("AudioDecoder" in window)) {
    throw new Error("this browser has no WebCodecs audio (try a recent Chrome or Chromium)");
  }
  for (const sampleRate of [24000, 48000]) {
    const config = { codec: "opus", sampleRate, numberOfChannels: 1, bitrate: 32000 };
    const support = await AudioEncoder.isConfigSupported(config);
    if (support.supported) return config;
  }
  throw new Error("this browser cannot encode Opus with WebCodecs");
}

class Session {
  constructor() {
    this.ws = null;
    this.ctx = null;
    this.stream = null;
    this.encoder = null;
    this.decoder = null;
    this.playTime = 0;
    this.frameSent = []; // time each 80 ms of microphone audio was sent
    this.pingTimer = null;
    this.closed = false;
  }

  async start() {
    setState("connecting");
    const config = await pickRate();
    const rate = config.sampleRate;
    stats.sampleRate = rate;
    this.frame = Math.round(rate * 0.08);
    this.ctx = new AudioContext({ sampleRate: rate, latencyHint: "interactive" });
    await this.ctx.resume();
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const params = new URLSearchParams();
    for (const name of ["text_temperature", "text_topk", "audio_temperature", "audio_topk", "text_seed", "audio_seed"]) {
      const value = $(name) ? $(name).value.trim() : "";
      if (value !== "") params.set(name, value);
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = params.toString() ? `?${params}` : "";
    this.ws = new WebSocket(`${scheme}://${location.host}/api/chat${query}`);
    this.ws.binaryType = "arraybuffer";
    this.ws.onmessage = (e) => this.onMessage(new Uint8Array(e.data));
    this.ws.onclose = (e) => this.stop(e.code === 1000 || e.code === 1005 ? "" : `closed (${e.code} ${e.reason})`);
    this.ws.onerror = () => showError("websocket error");
    this.config = config;
  }

  async startAudio() {
    const rate = this.config.sampleRate;
    const muxer = new OggOpusMuxer(rate);
    const sendPage = (page) => {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(kindMessage(KIND.AUDIO, page));
    };
    for (const page of muxer.headers()) sendPage(page);
    this.encoder = new AudioEncoder({
      output: (chunk) => {
        const packet = new Uint8Array(chunk.byteLength);
        chunk.copyTo(packet);
        sendPage(muxer.page(packet, Math.round((chunk.duration || 20000) * 48000 / 1e6)));
      },
      error: (e) => showError(`encoder: ${e.message}`),
    });
    this.encoder.configure(this.config);
    await this.ctx.audioWorklet.addModule("static/worklet.js");
    const source = this.ctx.createMediaStreamSource(this.stream);
    this.capture = new AudioWorkletNode(this.ctx, "moshi-capture", { processorOptions: { chunk: rate / 50 } });
    let timestamp = 0;
    this.capture.port.onmessage = (e) => {
      if (this.closed || $("mute").checked) return;
      const pcm = e.data;
      this.encoder.encode(new AudioData({
        format: "f32-planar", sampleRate: rate, numberOfFrames: pcm.length, numberOfChannels: 1, timestamp, data: pcm,
      }));
      timestamp += Math.round(pcm.length * 1e6 / rate);
      const before = Math.floor(stats.sentSamples / this.frame);
      stats.sentSamples += pcm.length;
      if (Math.floor(stats.sentSamples / this.frame) > before) this.frameSent.push(performance.now());
      this.meter(pcm);
    };
    source.connect(this.capture);
    this.pingTimer = setInterval(() => {
      const payload = new TextEncoder().encode(String(performance.now()));
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(kindMessage(KIND.PING, payload));
    }, 1000);
  }

  meter(pcm) {
    let sum = 0;
    for (let i = 0; i < pcm.length; i++) sum += pcm[i] * pcm[i];
    const db = 10 * Math.log10(sum / pcm.length + 1e-12);
    $("level").value = Math.max(0, Math.min(1, (db + 60) / 60)); // -60 dBFS .. 0 dBFS
  }

  onMessage(data) {
    if (data.length === 0) return;
    const kind = data[0];
    const payload = data.subarray(1);
    if (kind === KIND.HANDSHAKE) {
      const detail = payload.length >= 2 ? `protocol ${payload[0]}, model ${payload[1]}` : "";
      setState("connected", detail);
      this.startAudio().catch((e) => { showError(e.message); this.stop(e.message); });
    } else if (kind === KIND.AUDIO) {
      this.onAudio(payload);
    } else if (kind === KIND.TEXT) {
      const piece = new TextDecoder().decode(payload);
      stats.text += piece;
      $("text").textContent += piece;
      $("text").scrollTop = $("text").scrollHeight;
    } else if (kind === KIND.METADATA) {
      try {
        const meta = JSON.parse(new TextDecoder().decode(payload));
        stats.backend = meta.backend || null;
        $("backend").textContent = meta.backend ? `${meta.backend} backend` : "";
      } catch (e) { showError("bad metadata"); }
    } else if (kind === KIND.ERROR) {
      showError(`server: ${new TextDecoder().decode(payload)}`);
    } else if (kind === KIND.PING) {
      const sent = parseFloat(new TextDecoder().decode(payload));
      if (!Number.isNaN(sent)) {
        stats.rttMs = performance.now() - sent;
        $("rtt").textContent = `${stats.rttMs.toFixed(0)} ms`;
      }
    }
  }

  onAudio(bytes) {
    if (!this.demux) this.demux = new OggDemuxer();
    let packets;
    try { packets = this.demux.packets(bytes); } catch (e) { showError(`reply audio: ${e.message}`); return; }
    for (const packet of packets) {
      if (!this.decoder) {
        if (String.fromCharCode(...packet.subarray(0, 8)) !== "OpusHead") continue;
        this.decoder = new AudioDecoder({ output: (a) => this.play(a), error: (e) => showError(`decoder: ${e.message}`) });
        this.decoder.configure({ codec: "opus", sampleRate: 24000, numberOfChannels: 1, description: packet });
        this.decodeTime = 0;
        continue;
      }
      if (String.fromCharCode(...packet.subarray(0, 8)) === "OpusTags") continue;
      this.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: this.decodeTime, data: packet }));
      this.decodeTime += 20000;
    }
  }

  play(audio) {
    const n = audio.numberOfFrames;
    const pcm = new Float32Array(n);
    audio.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
    const rate = audio.sampleRate;
    audio.close();
    for (let i = 0; i < n; i++) stats.replyEnergy += pcm[i] * pcm[i];
    // Latency: time since the matching 80 ms of microphone audio was sent.
    const before = Math.floor(stats.receivedSamples / this.frame);
    stats.receivedSamples += Math.round(n * stats.sampleRate / rate); // counted at the microphone's rate
    const after = Math.floor(stats.receivedSamples / this.frame);
    if (after > before && this.frameSent[after - 1] !== undefined) {
      const ms = performance.now() - this.frameSent[after - 1];
      stats.latencyMs = stats.latencyMs === null ? ms : 0.9 * stats.latencyMs + 0.1 * ms;
      $("latency").textContent = `${stats.latencyMs.toFixed(0)} ms`;
    }
    const seconds = (x) => (x / stats.sampleRate).toFixed(1);
    $("audio").textContent = `sent ${seconds(stats.sentSamples)} s, received ${seconds(stats.receivedSamples)} s`;
    const buffer = this.ctx.createBuffer(1, n, rate);
    buffer.copyToChannel(pcm, 0);
    const node = this.ctx.createBufferSource();
    node.buffer = buffer;
    node.connect(this.ctx.destination);
    const now = this.ctx.currentTime;
    if (this.playTime < now + 0.02) this.playTime = now + 0.08; // underrun: rebuild a small cushion
    node.start(this.playTime);
    this.playTime += n / rate;
  }

  stop(reason = "") {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pingTimer);
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.encoder && this.encoder.state !== "closed") this.encoder.close();
    if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
    if (this.ctx) this.ctx.close();
    if (reason) { showError(reason); setState("error", reason); } else setState("disconnected");
    if (session === this) session = null;
  }
}

$("connect").addEventListener("click", async () => {
  if (session) { session.stop(); return; }
  $("errors").textContent = "";
  session = new Session();
  try { await session.start(); } catch (e) { if (session) session.stop(e.message); }
});

setState("disconnected");
