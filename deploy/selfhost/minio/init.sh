#!/bin/sh
# Creates the data plane's bucket and a MinIO user limited to it. Idempotent.
set -eu

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "local/$S3_BUCKET_NAME"

policy=/tmp/vibe-dataplane-policy.json
cat > "$policy" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::${S3_BUCKET_NAME}"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::${S3_BUCKET_NAME}/*"]
    }
  ]
}
JSON
mc admin policy create local vibe-dataplane "$policy" >/dev/null
# `user add` with an existing name updates its secret, so a changed S3_SECRET_KEY takes effect.
mc admin user add local "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >/dev/null
mc admin policy attach local vibe-dataplane --user "$S3_ACCESS_KEY" >/dev/null 2>&1 || true
echo "bucket $S3_BUCKET_NAME ready for user $S3_ACCESS_KEY"
