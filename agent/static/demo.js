// Frontdesk browser demo: microphone -> websocket -> the same call pipeline as a phone call.
//
// Wire protocol: telephony/browser_codec.py. Microphone frames come from an AudioWorklet
// (mic-worklet.js) as 20 ms of 16-bit PCM; bot audio is scheduled back to back through Web
// Audio; each mark is echoed once the audio before it has played, and a "clear" stops every
// scheduled sample at once (barge-in). `window.frontdeskDemo` exposes state and playback
// counters for tests and the curious.

"use strict";

(() => {
  const RATE = 16000;
  const LEAD_SECS = 0.06; // scheduling headroom for the first chunk of a reply

  const $ = (id) => document.getElementById(id);
  const ui = {
    call: $("call"), status: $("status"), meter: $("meter"), problem: $("problem"),
    problemText: $("problem-text"), retry: $("retry"), transcript: $("transcript"),
    empty: $("empty"), callId: $("call-id"),
  };

  const stats = {
    audioChunksReceived: 0, audioChunksPlayed: 0, samplesPlayed: 0, marksReceived: 0,
    marksAcked: 0, clears: 0, chunksCancelled: 0, outputPeak: 0, micFramesSent: 0, interims: 0,
  };
  const demo = { status: "idle", errorCode: "", callSid: "", sampleRate: 0, outcome: "", stats };
  window.frontdeskDemo = demo;

  const MESSAGES = {
    insecure: "This page can only use the microphone over a secure connection (https, or " +
      "http://localhost). Open it that way and try again.",
    denied: "Microphone access was denied. Allow the microphone for this page (the icon in " +
      "the address bar or your browser's site settings), then try again.",
    nomic: "No microphone was found. Plug one in or pick one in your system's sound " +
      "settings, then try again.",
    micbusy: "The microphone could not be started; another application may be using it. " +
      "Close it and try again.",
    audio: "Your browser could not start audio processing for the call. Try again, or use a " +
      "recent Chrome, Edge or Firefox.",
    unreachable: "Couldn't reach the Frontdesk server. Check that it is running, then try again.",
    dropped: "The connection to the server was lost and the call ended.",
    busy: "The demo is full right now. Please try again in a minute.",
    rate_limited: "You've started several calls in a short time. Please wait a minute, then try again.",
    protocol: "The page and the server did not understand each other. Reload the page and try again.",
    server: "The server hit a problem and ended the call. Try again in a moment.",
    disabled: "The browser demo is turned off on this server.",
  };

  let call = null; // the live call, or null

  // --- Status and problems -------------------------------------------------------------------

  function setStatus(status, text) {
    demo.status = status;
    document.body.dataset.status = status;
    ui.status.textContent = text;
    const live = status === "connecting" || status === "in-call";
    ui.call.textContent = live ? "Hang up" : "Start call";
    ui.call.classList.toggle("hangup", live);
    ui.call.disabled = false;
  }

  function showProblem(code, text) {
    demo.errorCode = code;
    ui.problemText.textContent = text;
    ui.problem.hidden = false;
    setStatus("error", "The call is not connected.");
  }

  function clearProblem() {
    demo.errorCode = "";
    ui.problem.hidden = true;
  }

  // --- Transcript ----------------------------------------------------------------------------

  let callerBubble = null; // the caller's turn being heard
  let botBubble = null; // the receptionist's turn being spoken

  function addItem(className) {
    ui.empty.hidden = true;
    const li = document.createElement("li");
    li.className = className;
    ui.transcript.appendChild(li);
    li.scrollIntoView({ block: "end", behavior: "smooth" });
    return li;
  }

  function bubble(role) {
    const li = addItem(`turn ${role}`);
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = role === "caller" ? "You" : "Receptionist";
    const text = document.createElement("div");
    text.className = "text";
    li.append(who, text);
    li.dataset.role = role;
    return li;
  }

  function note(li, text, className = "") {
    const div = document.createElement("div");
    div.className = `note ${className}`.trim();
    div.textContent = text;
    li.appendChild(div);
  }

  function pendingCaller() {
    botBubble = null;
    if (!callerBubble) {
      callerBubble = bubble("caller");
      callerBubble.classList.add("pending");
    }
    return callerBubble;
  }

  function callerHearing(text) {
    // What the caller is saying right now, as recognised so far: replaced by the next interim
    // transcript, removed when the words are final.
    if (!text.trim()) return;
    const li = pendingCaller();
    let el = li.querySelector(".interim");
    if (!el) {
      el = document.createElement("div");
      el.className = "interim";
      li.querySelector(".text").after(el);
    }
    el.textContent = text.trim();
    stats.interims++;
  }

  function callerHeard(text) {
    // A segment of the caller's speech was transcribed (the turn may not be over yet).
    if (!text.trim()) return;
    const li = pendingCaller();
    li.querySelector(".interim")?.remove();
    const el = li.querySelector(".text");
    el.textContent = `${el.textContent} ${text.trim()}`.trim();
  }

  function callerTurn(event) {
    if (!callerBubble) callerBubble = bubble("caller");
    callerBubble.querySelector(".interim")?.remove();
    callerBubble.classList.remove("pending");
    callerBubble.querySelector(".text").textContent = event.text || "";
    callerBubble = null;
    botBubble = null;
  }

  function botSegment(name, text) {
    callerBubble = null;
    if (!botBubble) botBubble = bubble("bot");
    const el = botBubble.querySelector(".text");
    if (botBubble.dataset.fromTurn) {
      el.textContent = ""; // a fixed phrase recorded before it was spoken: show it as spoken
      delete botBubble.dataset.fromTurn;
    }
    const span = document.createElement("span");
    span.className = "segment queued";
    span.dataset.mark = name;
    span.textContent = (el.childNodes.length ? " " : "") + text;
    el.appendChild(span);
  }

  function segmentPlayed(name) {
    const span = ui.transcript.querySelector(`.segment[data-mark="${CSS.escape(name)}"]`);
    if (span) span.classList.replace("queued", "played");
  }

  function segmentsCut() {
    for (const span of ui.transcript.querySelectorAll(".segment.queued")) {
      span.classList.replace("queued", "unheard");
      span.title = "not heard: you interrupted";
    }
  }

  function markCut(li, heardText) {
    // The server says how much of the interrupted reply was heard; the sentence that was
    // playing may not have been shown yet (its text follows its audio), so show its heard part
    // and mark where the caller cut in.
    const el = li.querySelector(".text");
    const norm = (text) => text.replace(/\s+/g, " ").trim();
    const played = norm([...el.querySelectorAll(".segment.played")].map((s) => s.textContent).join(" "));
    const heard = norm(heardText);
    const rest = el.querySelector(".segment") && heard.startsWith(played) ? heard.slice(played.length).trim() : "";
    const firstUnheard = el.querySelector(".segment.unheard");
    if (rest) {
      const span = document.createElement("span");
      span.className = "segment played partial";
      span.textContent = ` ${rest}`;
      if (firstUnheard) {
        const words = firstUnheard.textContent.trim().split(/\s+/);
        firstUnheard.textContent = ` ${words.slice(rest.split(" ").length).join(" ")}`;
        el.insertBefore(span, firstUnheard);
      } else {
        el.appendChild(span);
      }
    }
    if (!el.querySelector(".segment.unheard")) {
      const cut = document.createElement("span");
      cut.className = "segment unheard cut";
      cut.textContent = " …";
      el.appendChild(cut);
    }
    for (const span of el.querySelectorAll(".segment.unheard")) span.title = "not heard: you interrupted";
  }

  function ms(value) {
    return `${Math.round(value)} ms`;
  }

  function botTurn(event) {
    const timings = event.timings || {};
    let li = botBubble;
    if (!li) {
      li = botBubble = bubble("bot");
      li.querySelector(".text").textContent = event.text || "";
      if (timings.fixed_phrase) li.dataset.fromTurn = "1";
    }
    if (event.interrupted) {
      markCut(li, event.text || "");
      note(li, "interrupted by you", "interrupted");
    }
    if (timings.voice_to_voice_ms !== undefined) {
      const parts = [`answered in ${ms(timings.voice_to_voice_ms)}`];
      if (timings.stt_ms !== undefined) parts.push(`speech-to-text ${ms(timings.stt_ms)}`);
      if (timings.llm_first_token_ms !== undefined) parts.push(`LLM first token ${ms(timings.llm_first_token_ms)}`);
      if (timings.tts_first_audio_ms !== undefined) parts.push(`text-to-speech ${ms(timings.tts_first_audio_ms)}`);
      note(li, parts.join(" · "), "latency");
      li.dataset.latencyMs = String(timings.voice_to_voice_ms);
    }
  }

  function toolCall(event) {
    callerBubble = null;
    botBubble = null; // the answer after a tool call starts a new bubble below it
    const li = addItem("tool");
    li.dataset.tool = event.name;
    const name = document.createElement("div");
    name.className = event.ok ? "name" : "name failed";
    const took = event.duration_ms !== undefined ? ` · ${ms(event.duration_ms)}` : "";
    name.textContent = `${event.name}${event.ok ? "" : " (failed)"}${took}`;
    const args = document.createElement("pre");
    args.className = "arguments";
    args.textContent = JSON.stringify(event.arguments || {}, null, 1);
    const result = document.createElement("pre");
    result.className = "result";
    result.textContent = event.ok ? JSON.stringify(event.result, null, 1) : String(event.error || "");
    const argsLabel = document.createElement("div");
    argsLabel.className = "label";
    argsLabel.textContent = "arguments";
    const resultLabel = document.createElement("div");
    resultLabel.className = "label";
    resultLabel.textContent = event.ok ? "result" : "error";
    li.append(name, argsLabel, args, resultLabel, result);
  }

  function systemNote(text) {
    addItem("system").textContent = text;
    callerBubble = null;
    botBubble = null;
  }

  // --- The call ------------------------------------------------------------------------------

  class Call {
    constructor() {
      this.ws = null;
      this.ctx = null;
      this.stream = null;
      this.worklet = null;
      this.out = null;
      this.analyser = null;
      this.ready = false;
      this.ended = false;
      this.hungUp = false;
      this.serverError = null;
      this.nextTime = 0;
      this.sources = new Set();
      this.pendingMarks = [];
      this.timer = null;
    }

    async start() {
      setStatus("connecting", "Asking for the microphone…");
      ui.call.disabled = false;
      if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        return this.fail("insecure", MESSAGES.insecure);
      }
      try {
        this.stream = await navigator.mediaDevices.getUserMedia({
          audio: {
            echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1,
          },
        });
      } catch (error) {
        const name = error && error.name;
        if (name === "NotAllowedError" || name === "SecurityError") return this.fail("denied", MESSAGES.denied);
        if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
          return this.fail("nomic", MESSAGES.nomic);
        }
        return this.fail("micbusy", MESSAGES.micbusy);
      }
      if (this.ended) return this.release();
      try {
        await this.startAudio();
      } catch (error) {
        console.error("audio set-up failed", error);
        return this.fail("audio", MESSAGES.audio);
      }
      if (this.ended) return this.release();
      setStatus("connecting", "Connecting to the receptionist…");
      this.connect();
    }

    async startAudio() {
      try {
        this.ctx = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
      } catch (error) {
        this.ctx = new AudioContext({ latencyHint: "interactive" });
      }
      await this.ctx.audioWorklet.addModule("/demo/mic-worklet.js");
      let source;
      try {
        source = this.ctx.createMediaStreamSource(this.stream);
      } catch (error) {
        // Some browsers refuse a microphone at a rate other than the device's own.
        await this.ctx.close();
        this.ctx = new AudioContext({ latencyHint: "interactive" });
        await this.ctx.audioWorklet.addModule("/demo/mic-worklet.js");
        source = this.ctx.createMediaStreamSource(this.stream);
      }
      this.worklet = new AudioWorkletNode(this.ctx, "frontdesk-mic", {
        numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1,
        processorOptions: { targetRate: RATE, frameMs: 20 },
      });
      this.worklet.port.onmessage = (message) => this.onMicFrame(message.data);
      const mute = this.ctx.createGain();
      mute.gain.value = 0;
      source.connect(this.worklet).connect(mute).connect(this.ctx.destination);
      this.out = this.ctx.createGain();
      this.analyser = this.ctx.createAnalyser();
      this.analyser.fftSize = 512;
      this.out.connect(this.analyser).connect(this.ctx.destination);
      if (this.ctx.state === "suspended") await this.ctx.resume();
    }

    connect() {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const ws = new WebSocket(`${scheme}//${location.host}/demo/ws`);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => ws.send(JSON.stringify({ type: "start", sampleRate: RATE, format: "pcm16" }));
      ws.onmessage = (message) => {
        if (typeof message.data === "string") this.onControl(JSON.parse(message.data));
        else this.play(message.data);
      };
      ws.onclose = (event) => this.onClose(event);
      this.timer = setInterval(() => this.tick(), 20);
    }

    onMicFrame({ pcm, rms }) {
      const level = rms > 0 ? Math.max(0, Math.min(1, (20 * Math.log10(rms) + 60) / 60)) : 0;
      ui.meter.style.width = `${Math.round(level * 100)}%`;
      if (this.ready && this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(pcm);
        stats.micFramesSent++;
      }
    }

    onControl(message) {
      switch (message.type) {
        case "ready":
          this.ready = true;
          demo.callSid = message.callSid;
          demo.sampleRate = message.sampleRate;
          demo.outcome = "";
          ui.callId.textContent = `Call ${message.callSid}`;
          setStatus("in-call", "Connected. Say hello when the receptionist has greeted you.");
          break;
        case "mark":
          stats.marksReceived++;
          this.pendingMarks.push({ name: message.name, at: this.nextTime });
          if (message.text) botSegment(message.name, message.text);
          break;
        case "clear":
          this.clear();
          break;
        case "event":
          this.onEvent(message);
          break;
        case "error":
          this.serverError = message;
          break;
        default:
          break;
      }
    }

    onEvent(event) {
      if (event.kind === "transcript") callerHeard(event.text || "");
      else if (event.kind === "interim") callerHearing(event.text || "");
      else if (event.kind === "turn" && event.role === "caller") callerTurn(event);
      else if (event.kind === "turn" && event.role === "bot") botTurn(event);
      else if (event.kind === "tool_call") toolCall(event);
      else if (event.kind === "fault") systemNote("The server hit a problem during this turn (details are in its log).");
      else if (event.kind === "ending") demo.outcome = event.outcome || "";
    }

    play(buffer) {
      stats.audioChunksReceived++;
      const pcm = new Int16Array(buffer);
      if (!pcm.length || !this.ctx) return;
      const samples = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
      const audio = this.ctx.createBuffer(1, samples.length, demo.sampleRate || RATE);
      audio.copyToChannel(samples, 0);
      const source = this.ctx.createBufferSource();
      source.buffer = audio;
      source.connect(this.out);
      const now = this.ctx.currentTime;
      if (this.nextTime < now + 0.01) this.nextTime = now + LEAD_SECS;
      source.start(this.nextTime);
      this.nextTime += audio.duration;
      this.sources.add(source);
      source.onended = () => {
        this.sources.delete(source);
        if (source.cancelled) return;
        stats.audioChunksPlayed++;
        stats.samplesPlayed += pcm.length;
      };
    }

    clear() {
      // Barge-in: everything scheduled stops now; unplayed marks are never echoed.
      stats.clears++;
      for (const source of this.sources) {
        source.cancelled = true;
        stats.chunksCancelled++;
        try { source.stop(); } catch (error) { /* not started yet */ }
        source.disconnect();
      }
      this.sources.clear();
      this.pendingMarks = [];
      this.nextTime = 0;
      segmentsCut();
    }

    tick() {
      if (!this.ctx) return;
      const now = this.ctx.currentTime;
      while (this.pendingMarks.length && this.pendingMarks[0].at <= now) {
        const mark = this.pendingMarks.shift();
        if (this.ws && this.ws.readyState === WebSocket.OPEN) {
          this.ws.send(JSON.stringify({ type: "mark", name: mark.name }));
          stats.marksAcked++;
        }
        segmentPlayed(mark.name);
      }
      if (this.sources.size && this.analyser) {
        const data = new Float32Array(this.analyser.fftSize);
        this.analyser.getFloatTimeDomainData(data);
        let peak = 0;
        for (const value of data) peak = Math.max(peak, Math.abs(value));
        stats.outputPeak = Math.max(stats.outputPeak, peak);
      }
    }

    hangUp() {
      this.hungUp = true;
      if (this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify({ type: "hangup" }));
        this.ws.close(1000, "caller hung up");
      }
      this.finish();
      setStatus("ended", "You hung up.");
      systemNote("Call ended.");
    }

    onClose(event) {
      if (this.ended) return;
      const wasReady = this.ready;
      this.finish();
      const error = this.serverError;
      if (error) {
        // Refusals (busy, rate limited) come with the server's own plain words.
        const plain = error.code === "busy" || error.code === "rate_limited";
        const text = (plain && error.message) || MESSAGES[error.code] || MESSAGES.server;
        return showProblem(error.code, text);
      }
      if (!wasReady) {
        // Refused before the call started without a reason: a handshake error (the server is
        // down, the demo is off, or this page's origin is not allowed).
        return showProblem("unreachable", MESSAGES.unreachable);
      }
      if (event.code === 1000) {
        if (demo.outcome === "max_duration") {
          setStatus("ended", "The demo call reached its time limit.");
          systemNote("Call ended: demo calls are limited in length. Start another call to go on.");
          return;
        }
        setStatus("ended", "The receptionist ended the call.");
        systemNote("Call ended.");
        return;
      }
      if (event.code === 1011) return showProblem("server", MESSAGES.server);
      return showProblem("dropped", MESSAGES.dropped);
    }

    fail(code, text) {
      this.finish();
      showProblem(code, text);
    }

    finish() {
      this.ended = true;
      this.ready = false;
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
      this.clearQuietly();
      this.release();
      if (this.ws && this.ws.readyState <= WebSocket.OPEN) {
        try { this.ws.close(1000, "call ended"); } catch (error) { /* closing */ }
      }
      ui.meter.style.width = "0";
      if (call === this) call = null;
    }

    clearQuietly() {
      for (const source of this.sources) {
        source.cancelled = true;
        try { source.stop(); } catch (error) { /* not started */ }
      }
      this.sources.clear();
      this.pendingMarks = [];
    }

    release() {
      if (this.stream) for (const track of this.stream.getTracks()) track.stop();
      this.stream = null;
      if (this.worklet) this.worklet.port.onmessage = null;
      if (this.ctx && this.ctx.state !== "closed") this.ctx.close().catch(() => {});
      this.ctx = null;
    }
  }

  function startCall() {
    clearProblem();
    callerBubble = null;
    botBubble = null;
    if (ui.transcript.children.length) systemNote("New call");
    call = new Call();
    call.start();
  }

  ui.call.addEventListener("click", () => {
    if (call && !call.ended) call.hangUp();
    else startCall();
  });
  ui.retry.addEventListener("click", startCall);
  window.addEventListener("pagehide", () => { if (call && !call.ended) call.hangUp(); });
  setStatus("idle", "Ready when you are.");
})();
