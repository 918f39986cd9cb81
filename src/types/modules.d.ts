// libmime ships no type declarations; these cover the functions sendas uses.
declare module 'libmime' {
  export function decodeWords(str: string): string;
  export function encodeWord(data: string | Buffer, mimeWordEncoding?: 'Q' | 'B', maxLength?: number): string;
  export function foldLines(str: string, lineLength?: number, afterSpace?: boolean): string;
  const libmime: {
    decodeWords: typeof decodeWords;
    encodeWord: typeof encodeWord;
    foldLines: typeof foldLines;
  };
  export default libmime;
}

declare module 'smtp-server/lib/smtp-connection.js' {
  export class SMTPConnection {}
}
