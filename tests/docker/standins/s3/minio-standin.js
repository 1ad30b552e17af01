#!/usr/bin/env node
// Stand-in for `minio server DIR`: the npm package s3rver on :9000, keeping its objects in DIR
// (the minio-data volume), accepting the MINIO_ROOT_USER/MINIO_ROOT_PASSWORD key pair.
// A test fixture, not MinIO: no console on :9001, no policies, anonymous requests are let in.
'use strict';

const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');

const args = process.argv.slice(2);
if (args[0] !== 'server' || !args[1]) {
  console.error('usage: minio-standin server DIR [ignored minio options]');
  process.exit(2);
}
const user = process.env.MINIO_ROOT_USER || 'minioadmin';
const password = process.env.MINIO_ROOT_PASSWORD || 'minioadmin';
AWSAccount.DUMMY_ACCOUNT.createKeyPair(user, password);

// vhostBuckets off: clients reach it as http://minio:9000, which s3rver would take for a bucket name.
const server = new S3rver({ address: '0.0.0.0', port: 9000, directory: args[1], vhostBuckets: false });
server.run().then(
  () => console.log(`s3rver (MinIO stand-in) on :9000, data in ${args[1]}`),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close().then(() => process.exit(0)));
}
