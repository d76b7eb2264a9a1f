-- What `create_all` made for the gateway database (postgresql) at d80a704, before migrations.
-- Recorded from that commit's models; never re-recorded.

CREATE TABLE api_keys (
	key_id VARCHAR NOT NULL, 
	secret_sha256 VARCHAR NOT NULL, 
	role VARCHAR NOT NULL, 
	customer_id VARCHAR, 
	name VARCHAR NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	revoked_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (key_id)
);

CREATE TABLE browser_sessions (
	session_sha256 VARCHAR NOT NULL, 
	key_id VARCHAR NOT NULL, 
	csrf_token VARCHAR NOT NULL, 
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (session_sha256)
);

CREATE INDEX ix_browser_sessions_key_id ON browser_sessions (key_id);

CREATE TABLE gateway_secrets (
	name VARCHAR NOT NULL, 
	value VARCHAR NOT NULL, 
	PRIMARY KEY (name)
);
