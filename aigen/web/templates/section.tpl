% from aigen.web.views import short_text as short
% status = g['status']
% state = g.get('run_state')
% stalled = status == 'Processing' and state in ('stalled', 'no_worker')
% label = 'Stalled' if stalled else status
% live = status == 'Processing'
% back = '/g/' + g['id'] if full else '/'
<section class="generation status-{{status.lower()}}" id="g-{{g['id']}}" data-id="{{g['id']}}" data-status="{{status}}" data-state="{{state or ''}}" data-v="{{g.get('v') or ''}}" data-full="{{1 if full else 0}}">
  <header class="gen-head" data-live-key="head">
    % if full:
    <h1 class="prompt">{{g['prompt']}}</h1>
    % else:
    <h2 class="prompt"><a href="/g/{{g['id']}}">{{g['prompt']}}</a></h2>
    % end
    <p class="meta">
      <span class="badge badge-{{label.lower()}}">{{label}}</span>
      <span>Requested <time datetime="{{g['created_at'] or ''}}">{{t(g['created_at'])}}</time></span>
      % if g['generated_at']:
      <span>Finished <time datetime="{{g['generated_at']}}">{{t(g['generated_at'])}}</time> ({{took(g['created_at'], g['generated_at'])}})</span>
      % end
      <span class="gid"><code>{{g['id']}}</code></span>
    </p>
  </header>
  % include('actions', g=g)
  % if live:
  <div class="processing" data-live-key="status">
    % if stalled:
    <p class="message">Stalled: no process is working on it.</p>
    % else:
    <p class="message">{{g['message']}}</p>
    % end
    <label class="progress-line"><progress max="{{g['total']}}" value="{{g['done']}}"></progress>
      <span><span class="progress-text">{{g['done']}} of {{g['total']}}</span> ready</span></label>
    % if state == 'no_worker':
    <p class="hint">It is queued on the cluster, where no worker is running now: start <code>aigen worker</code>.</p>
    % elif stalled:
    <form method="post" action="/g/{{g['id']}}/retry" class="retry-form">
      <input type="hidden" name="csrf_token" value="{{csrf}}">
      <input type="hidden" name="next" value="{{back}}">
      <button type="submit" class="primary">Resume</button>
      <span class="hint">Its run was stopped; what was made is kept. Or run <code>{{g['retry_command']}}</code></span>
    </form>
    % end
  </div>
  % elif status == 'Failed':
  <div class="failure" data-live-key="status">
    <p><strong>{{g['done']}} of {{g['total']}} made; {{len(g['failed'])}} failed.</strong></p>
    <ul class="errors">
      % for a in g['failed']:
      <li>{{a['kind'].capitalize()}} {{a['index']}}: {{a['error'] or 'no reason recorded'}}</li>
      % end
    </ul>
    <form method="post" action="/g/{{g['id']}}/retry" class="retry-form">
      <input type="hidden" name="csrf_token" value="{{csrf}}">
      <input type="hidden" name="next" value="{{back}}">
    %   if g['all_refused']:
      <input type="hidden" name="include_refused" value="1">
      <p>The provider refused every missing one: the same prompt is refused again (and may be charged again).
        Change the prompt with a new generation, or submit them again anyway
        (<code class="retry">{{g['retry_command']}}</code>).</p>
      <button type="submit" class="secondary">Submit them again anyway</button>
    %   else:
      <p>Make only the missing ones (what was made is kept): <code class="retry">{{g['retry_command']}}</code></p>
      <button type="submit" class="primary">Retry</button>
    %   end
    </form>
  </div>
  % end
  % for kind, title in (('video', 'Videos'), ('image', 'Images')):
  %   tiles = [a for a in g['assets'] if a['kind'] == kind and (a['url'] or live)]
  %   if tiles:
  <h{{2 if full else 3}} class="kind-title" data-live-key="{{kind}}-title">{{title}}</h{{2 if full else 3}}>
  <div class="{{kind}}s" data-live-key="{{kind}}s" data-live="list">
    % for a in tiles:
    %   label = '%s %d: %s' % (kind.capitalize(), a['index'], short(g['prompt'], 100))
    %   if not a['url']:
    <figure class="pending {{kind}} pending-{{a['status']}}" data-live-key="p-{{a['id']}}" data-pending="{{a['id']}}">
      <svg viewBox="0 0 {{a['width'] or 4}} {{a['height'] or 3}}" aria-hidden="true" focusable="false"></svg>
      <figcaption><span>{{kind.capitalize()}} {{a['index']}}</span>
        <span class="pending-state">{{'failed' if a['status'] == 'failed' else ('making' if a['status'] == 'running' else 'waiting')}}</span></figcaption>
    </figure>
    %   else:
    <figure class="{{kind}}" data-live-key="a-{{a['id']}}" data-asset="{{a['id']}}" data-kind="{{kind}}" data-index="{{a['index']}}" data-src="{{a['url']}}" data-download="{{a['download_url']}}" data-poster="{{a['poster_url'] or ''}}" data-name="{{a['name']}}" data-provider="{{a['provider'] or ''}}" data-model="{{a['model'] or ''}}" data-width="{{a['width'] or ''}}" data-height="{{a['height'] or ''}}" data-duration="{{a['duration'] or ''}}" data-seed="{{'' if a['seed'] is None else a['seed']}}" data-bytes="{{a['bytes'] or ''}}">
      % if kind == 'video':
      <a class="tile" href="{{a['url']}}" data-video="{{a['url']}}" data-label="{{label}}"><img src="{{a['thumb_url']}}" srcset="{{a['thumb_url']}} 1x, {{a['thumb2x_url']}} 2x"
      % else:
      <a class="tile" href="{{a['url']}}" title="Open full size"><img src="{{a['thumb_url']}}" srcset="{{a['thumb_url']}} 1x, {{a['thumb2x_url']}} 2x"
      % end
           alt="{{label}}" loading="{{'eager' if eager else 'lazy'}}" decoding="async"
      % if a['width'] and a['height']:
           width="{{a['width']}}" height="{{a['height']}}"
      % end
           >
      % if kind == 'video':
      <span class="play" aria-hidden="true"></span>
      % end
      </a>
      <figcaption><span>{{kind.capitalize()}} {{a['index']}}{{(' · %.1f s' % a['duration']) if kind == 'video' and a['duration'] else ''}}</span>
        <a href="{{a['download_url']}}" download>Download<span class="vh"> {{kind}} {{a['index']}} ({{a['format']}}, {{size(a['bytes'])}})</span></a></figcaption>
    </figure>
    %   end
    % end
  </div>
  %   end
  % end
  % if not g['videos'] and not g['images'] and status == 'Completed':
  <p class="hint" data-live-key="empty">This generation has no files.</p>
  % end
</section>
