// Ogg framing for Opus in the browser: a muxer (packets -> pages) and a demuxer (pages -> packets).
// WebCodecs gives raw Opus packets; the chat protocol carries Ogg pages (RFC 3533, RFC 7845).

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let k = 0; k < 8; k++) r = (r & 0x80000000) ? ((r << 1) ^ 0x04c11db7) : (r << 1);
    t[i] = r >>> 0;
  }
  return t;
})();

export function oggCrc(bytes) {
  let crc = 0;
  for (let i = 0; i < bytes.length; i++) {
    crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ bytes[i]) & 0xff]) >>> 0;
  }
  return crc >>> 0;
}

// Builds the pages of one logical Opus stream: call headers() once, then page(packet, samples48k).
export class OggOpusMuxer {
  constructor(inputSampleRate, preSkip = 312) {
    this.serial = (Math.random() * 0xffffffff) >>> 0;
    this.sequence = 0;
    this.granule = 0;
    this.inputSampleRate = inputSampleRate;
    this.preSkip = preSkip;
  }

  _page(packet, headerType) {
    const lacing = [];
    let left = packet.length;
    while (left >= 255) { lacing.push(255); left -= 255; }
    lacing.push(left);
    const page = new Uint8Array(27 + lacing.length + packet.length);
    const view = new DataView(page.buffer);
    page.set([0x4f, 0x67, 0x67, 0x53], 0); // "OggS"
    page[4] = 0;
    page[5] = headerType;
    view.setUint32(6, this.granule % 0x100000000, true);
    view.setUint32(10, Math.floor(this.granule / 0x100000000), true);
    view.setUint32(14, this.serial, true);
    view.setUint32(18, this.sequence++, true);
    view.setUint32(22, 0, true);
    page[26] = lacing.length;
    page.set(lacing, 27);
    page.set(packet, 27 + lacing.length);
    view.setUint32(22, oggCrc(page), true);
    return page;
  }

  // The two header pages: OpusHead (beginning of stream) and OpusTags.
  headers() {
    const head = new Uint8Array(19);
    const hv = new DataView(head.buffer);
    head.set(new TextEncoder().encode("OpusHead"), 0);
    head[8] = 1; // version
    head[9] = 1; // channels
    hv.setUint16(10, this.preSkip, true);
    hv.setUint32(12, this.inputSampleRate, true);
    hv.setInt16(16, 0, true); // output gain
    head[18] = 0; // channel mapping family
    const vendor = new TextEncoder().encode("mimi-moshi web");
    const tags = new Uint8Array(8 + 4 + vendor.length + 4);
    const tv = new DataView(tags.buffer);
    tags.set(new TextEncoder().encode("OpusTags"), 0);
    tv.setUint32(8, vendor.length, true);
    tags.set(vendor, 12);
    tv.setUint32(12 + vendor.length, 0, true);
    return [this._page(head, 2), this._page(tags, 0)];
  }

  // One audio packet in its own page; samples48k is its duration in 48 kHz samples.
  page(packet, samples48k) {
    this.granule += samples48k;
    return this._page(packet, 0);
  }
}

// Splits received bytes into Opus packets; the first packet of a stream is OpusHead, then OpusTags.
export class OggDemuxer {
  constructor() { this.partial = null; }

  packets(bytes) {
    const out = [];
    let pos = 0;
    while (pos + 27 <= bytes.length) {
      if (bytes[pos] !== 0x4f || bytes[pos + 1] !== 0x67 || bytes[pos + 2] !== 0x67 || bytes[pos + 3] !== 0x53) {
        throw new Error("not an Ogg page");
      }
      const nseg = bytes[pos + 26];
      let body = pos + 27 + nseg;
      let start = body;
      for (let i = 0; i < nseg; i++) {
        const len = bytes[pos + 27 + i];
        body += len;
        if (len < 255) {
          const piece = bytes.subarray(start, body);
          if (this.partial) {
            const whole = new Uint8Array(this.partial.length + piece.length);
            whole.set(this.partial, 0);
            whole.set(piece, this.partial.length);
            out.push(whole);
            this.partial = null;
          } else {
            out.push(piece.slice());
          }
          start = body;
        }
      }
      if (start < body) { // a packet continued on the next page
        const piece = bytes.subarray(start, body);
        const prev = this.partial || new Uint8Array(0);
        const joined = new Uint8Array(prev.length + piece.length);
        joined.set(prev, 0);
        joined.set(piece, prev.length);
        this.partial = joined;
      }
      pos = body;
    }
    return out;
  }
}
