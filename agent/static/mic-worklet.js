// AudioWorklet: microphone samples -> 20 ms frames of 16-bit PCM at the call's rate, plus a level.
//
// The context usually runs at the call's rate already (the page asks for it); when the browser
// insists on its own rate, frames are downsampled here by averaging (a box filter, enough for
// speech recognition) so the server always gets the rate it was told.

class FrontdeskMic extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.target = opts.targetRate || 16000;
    this.ratio = sampleRate / this.target; // input samples per output sample
    this.frameSize = Math.round((this.target * (opts.frameMs || 20)) / 1000);
    this.frame = new Int16Array(this.frameSize);
    this.filled = 0;
    this.phase = 0;
    this.sum = 0;
    this.count = 0;
    this.energy = 0;
  }

  push(value) {
    const clamped = Math.max(-1, Math.min(1, value));
    this.frame[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    this.energy += clamped * clamped;
    if (this.filled === this.frameSize) {
      const rms = Math.sqrt(this.energy / this.frameSize);
      this.port.postMessage({ pcm: this.frame.buffer, rms }, [this.frame.buffer]);
      this.frame = new Int16Array(this.frameSize);
      this.filled = 0;
      this.energy = 0;
    }
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    if (this.ratio === 1) {
      for (let i = 0; i < channel.length; i++) this.push(channel[i]);
    } else if (this.ratio > 1) {
      for (let i = 0; i < channel.length; i++) {
        this.sum += channel[i];
        this.count++;
        this.phase += 1;
        if (this.phase >= this.ratio) {
          this.phase -= this.ratio;
          this.push(this.sum / this.count);
          this.sum = 0;
          this.count = 0;
        }
      }
    } else {
      // Context slower than the call (rare): repeat samples.
      for (let i = 0; i < channel.length; i++) {
        this.phase += 1 / this.ratio;
        while (this.phase >= 1) {
          this.phase -= 1;
          this.push(channel[i]);
        }
      }
    }
    return true;
  }
}

registerProcessor("frontdesk-mic", FrontdeskMic);
