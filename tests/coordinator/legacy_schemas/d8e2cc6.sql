-- The coordinator schema of fedge at git commit d8e2cc6: the CREATE TABLE statements SQLAlchemy ran on
-- PostgreSQL (frozen; tests/coordinator/test_migrations.py upgrades databases made from it).
-- On SQLite the only difference is INTEGER where PostgreSQL has SERIAL.
CREATE TABLE audit_head (
	id INTEGER NOT NULL, 
	seq INTEGER NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE audit_log (
	seq INTEGER NOT NULL, 
	at FLOAT NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	actor VARCHAR(64) NOT NULL, 
	subject VARCHAR(160) NOT NULL, 
	details JSON NOT NULL, 
	prev_hash VARCHAR(64) NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	PRIMARY KEY (seq), 
	UNIQUE (prev_hash), 
	UNIQUE (hash)
);

CREATE TABLE devices (
	id VARCHAR(64) NOT NULL, 
	site VARCHAR(64), 
	gateway_id VARCHAR(64), 
	last_seen FLOAT, 
	revoked BOOLEAN NOT NULL, 
	labels JSON NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE gateways (
	id VARCHAR(64) NOT NULL, 
	site VARCHAR(64) NOT NULL, 
	last_seen FLOAT NOT NULL, 
	online_devices INTEGER NOT NULL, 
	eligible_devices INTEGER NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE jobs (
	id VARCHAR(64) NOT NULL, 
	spec JSON NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	committed_rounds INTEGER NOT NULL, 
	model_sha256 VARCHAR(64), 
	fleet_size INTEGER NOT NULL, 
	created_at FLOAT NOT NULL, 
	reason TEXT NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE partial_receipts (
	id SERIAL NOT NULL, 
	job_id VARCHAR(64) NOT NULL, 
	round INTEGER NOT NULL, 
	gateway_id VARCHAR(64) NOT NULL, 
	site VARCHAR(64) NOT NULL, 
	nonce VARCHAR(32) NOT NULL, 
	num_accepted INTEGER NOT NULL, 
	total_weight FLOAT NOT NULL, 
	received_at FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_partial_once UNIQUE (job_id, round, gateway_id), 
	UNIQUE (nonce)
);

CREATE TABLE participants (
	job_id VARCHAR(64) NOT NULL, 
	round INTEGER NOT NULL, 
	device_id VARCHAR(64) NOT NULL, 
	gateway_id VARCHAR(64), 
	nonce VARCHAR(32), 
	received_at FLOAT NOT NULL, 
	PRIMARY KEY (job_id, round, device_id), 
	UNIQUE (nonce)
);

CREATE TABLE round_traces (
	job_id VARCHAR(64) NOT NULL, 
	round INTEGER NOT NULL, 
	traceparent VARCHAR(55) NOT NULL, 
	PRIMARY KEY (job_id, round)
);

CREATE TABLE round_traffic (
	id SERIAL NOT NULL, 
	job_id VARCHAR(64) NOT NULL, 
	round INTEGER NOT NULL, 
	sender VARCHAR(64) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	bytes INTEGER NOT NULL, 
	devices INTEGER NOT NULL, 
	direct_bytes INTEGER NOT NULL, 
	received_at FLOAT NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE secagg_outcomes (
	job_id VARCHAR(64) NOT NULL, 
	round INTEGER NOT NULL, 
	expected INTEGER NOT NULL, 
	joined INTEGER NOT NULL, 
	survivors INTEGER NOT NULL, 
	abandoned BOOLEAN NOT NULL, 
	reason TEXT NOT NULL, 
	ended_at FLOAT NOT NULL, 
	PRIMARY KEY (job_id, round)
);

CREATE TABLE checkpoints (
	job_id VARCHAR(64) NOT NULL, 
	step INTEGER NOT NULL, 
	round INTEGER, 
	params_sha256 VARCHAR(64) NOT NULL, 
	opt_state_sha256 VARCHAR(64) NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (job_id, step), 
	FOREIGN KEY(job_id) REFERENCES jobs (id)
);

CREATE TABLE model_versions (
	sha256 VARCHAR(64) NOT NULL, 
	job_id VARCHAR(64) NOT NULL, 
	round INTEGER, 
	parent_sha256 VARCHAR(64), 
	size INTEGER NOT NULL, 
	metrics JSON NOT NULL, 
	created_at FLOAT NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	status_reason TEXT NOT NULL, 
	PRIMARY KEY (sha256), 
	FOREIGN KEY(job_id) REFERENCES jobs (id)
);

CREATE TABLE rounds (
	job_id VARCHAR(64) NOT NULL, 
	number INTEGER NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	base_sha256 VARCHAR(64) NOT NULL, 
	model_sha256 VARCHAR(64), 
	quotas JSON NOT NULL, 
	participants INTEGER NOT NULL, 
	gateways_reported INTEGER NOT NULL, 
	accuracy FLOAT, 
	loss FLOAT, 
	epsilon FLOAT, 
	reason TEXT NOT NULL, 
	started_at FLOAT, 
	training_deadline FLOAT, 
	report_deadline FLOAT, 
	ended_at FLOAT, 
	PRIMARY KEY (job_id, number), 
	FOREIGN KEY(job_id) REFERENCES jobs (id)
);

CREATE TABLE release_manifests (
	job_id VARCHAR(64) NOT NULL, 
	sequence INTEGER NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	audience VARCHAR(16) NOT NULL, 
	release_metadata JSON NOT NULL, 
	signature VARCHAR(128) NOT NULL, 
	issued_at FLOAT NOT NULL, 
	PRIMARY KEY (job_id, sequence), 
	FOREIGN KEY(sha256) REFERENCES model_versions (sha256)
);

CREATE TABLE releases (
	sha256 VARCHAR(64) NOT NULL, 
	release_metadata JSON NOT NULL, 
	signature VARCHAR(128) NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (sha256), 
	FOREIGN KEY(sha256) REFERENCES model_versions (sha256)
);

CREATE TABLE rollouts (
	id SERIAL NOT NULL, 
	job_id VARCHAR(64) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	previous_sha256 VARCHAR(64), 
	stage VARCHAR(16) NOT NULL, 
	canary_gateways JSON NOT NULL, 
	min_healthy INTEGER NOT NULL, 
	max_failures INTEGER NOT NULL, 
	hold_until FLOAT NOT NULL, 
	sequence INTEGER NOT NULL, 
	reason TEXT NOT NULL, 
	started_at FLOAT NOT NULL, 
	ended_at FLOAT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(sha256) REFERENCES model_versions (sha256)
);

CREATE TABLE rollout_health (
	rollout_id INTEGER NOT NULL, 
	device_id VARCHAR(64) NOT NULL, 
	gateway_id VARCHAR(64) NOT NULL, 
	"check" VARCHAR(16) NOT NULL, 
	holdout_accuracy FLOAT, 
	reason TEXT NOT NULL, 
	reported_at FLOAT NOT NULL, 
	PRIMARY KEY (rollout_id, device_id), 
	FOREIGN KEY(rollout_id) REFERENCES rollouts (id)
);
